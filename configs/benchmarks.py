"""The reference's per-dataset settings, and the helper every ``configs/<dataset>_<loss>.py`` calls.

Batch / length / negatives (reference_system.md §6.4 for CCE and CCE-, §7.2 and the README rows
for CE and CE-, which used their own smaller shapes because full logits do not fit otherwise).
30music and Megamarket have no full-CE run in the reference: their CE shapes are our choice, sized
so that the ``[B*L, V]`` logits stay under ~10 GB.
"""

from __future__ import annotations

import ml_collections

from configs import base

# dataset -> loss -> (batch_size, max_len, num_negatives)
SETTINGS = {
    "30music": {"cce": (256, 720, 0), "cce_neg": (256, 720, 4095),
                "ce": (64, 128, 0), "ce_neg": (1024, 64, 128)},
    "beauty": {"cce": (1024, 32, 0), "cce_neg": (1024, 32, 511),
               "ce": (256, 32, 0), "ce_neg": (1024, 32, 512)},
    "gowalla": {"cce": (1024, 320, 0), "cce_neg": (1024, 320, 511),
                "ce": (256, 64, 0), "ce_neg": (512, 256, 512)},
    "megamarket": {"cce": (5120, 320, 0), "cce_neg": (5120, 320, 1023),
                   "ce": (32, 64, 0), "ce_neg": (1024, 64, 128)},
    "movielens_20m": {"cce": (256, 512, 0), "cce_neg": (256, 512, 511),
                      "ce": (256, 512, 0), "ce_neg": (32, 512, 1024)},
    "zvuk": {"cce": (1024, 128, 0), "cce_neg": (1024, 128, 2047),
             "ce": (64, 64, 0), "ce_neg": (128, 32, 2048)},
}

# The two small leave-one-out sets of ../shared/data (no reference numbers). Scale of the published
# SASRec runs on these files (length 50, batch 128, hidden 64, one head: SASRec paper; eSASRec's
# README for S3-Rec Sports); the reference's 2 blocks. Path: $DATA_DIR/<file>, default data/.
SHARED = {
    "amazon_sports": "amazon_sports_s3rec.txt",
    "amazon_games": "amazon_video_games_sasrec.txt",
}
SHARED_DATA_NAME = {"amazon_sports": "amazon_sports", "amazon_games": "amazon_video_games"}
SHARED_SETTINGS = {"ce": (128, 50, 0), "cce": (128, 50, 0), "cce_neg": (128, 50, 511)}


def command(config_file: str) -> str:
    return f"python -m experiments.train --config configs/{config_file}.py --workdir runs/{config_file}"


def benchmark_config(dataset: str, loss: str) -> ml_collections.ConfigDict:
    """Reference benchmark ``dataset`` (one of ``SETTINGS``) trained with ``loss``."""
    if dataset not in SETTINGS or loss not in SETTINGS[dataset]:
        raise ValueError(f"no reference setting for {dataset}/{loss}: datasets {sorted(SETTINGS)}, "
                         f"losses {sorted(SETTINGS['zvuk'])}")
    batch, length, negatives = SETTINGS[dataset][loss]
    c = base.get_config(dataset)
    c.model.max_len = length
    c.train.batch_size = batch
    c.loss.type = loss
    c.loss.num_negatives = negatives
    c.workdir = f"runs/{dataset}_{loss}"
    return c


def shared_config(dataset: str, loss: str) -> ml_collections.ConfigDict:
    """One of the leave-one-out Amazon sets in ``$DATA_DIR`` (default ``data/``)."""
    import os

    if dataset not in SHARED or loss not in SHARED_SETTINGS:
        raise ValueError(f"no setting for {dataset}/{loss}: datasets {sorted(SHARED)}, "
                         f"losses {sorted(SHARED_SETTINGS)}")
    batch, length, negatives = SHARED_SETTINGS[loss]
    c = base.get_config(SHARED_DATA_NAME[dataset])
    c.data.path = os.path.join(os.environ.get("DATA_DIR", "data"), SHARED[dataset])
    c.model.max_len = length
    c.model.hidden = 64
    c.model.num_heads = 1
    c.model.dropout = 0.3
    c.train.batch_size = batch
    c.train.max_epochs = 200
    c.train.patience = 10
    c.loss.type = loss
    c.loss.num_negatives = negatives
    c.workdir = f"runs/{dataset}_{loss}"
    return c
