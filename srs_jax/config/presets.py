"""The reference benchmark settings; every ``configs/<dataset>_<loss>.py`` calls one helper here.

SASRec batch / length / negatives (MemoryEfficientSRS's settings for CCE and CCE-, its results
tables for CE and CE-, which used their own smaller shapes because full logits do not fit
otherwise). 30music and Megamarket have no full-CE run in the reference: their CE shapes are our
choice, sized so that the ``[B*L, V]`` logits stay under ~10 GB.

BERT4Rec keeps the SASRec network sizes and adds the cloze fields of ``srs_jax/models/bert4rec.py``:
``mask_prob`` 0.2 (the BERT4Rec paper's best value on ML-1m / ML-20m), 0.6 on the two Amazon
leave-one-out sets (the authors' Amazon Beauty script: ``masked_lm_prob=0.6``);
``last_item_mask_prob`` 0.1 (the authors' generator writes one "mask only the last item" copy per
ten cloze copies); ``head_transform`` True (the paper's GELU projection + LayerNorm).
"""

from __future__ import annotations

import os

import ml_collections

from srs_jax.config.defaults import run_config

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

# The two small leave-one-out sets (no reference numbers). Scale of the published SASRec runs on
# these files (length 50, batch 128, hidden 64, one head: SASRec paper; eSASRec's README for
# S3-Rec Sports); the reference's 2 blocks. Path: $DATA_DIR/<file>, default data/.
SHARED = {
    "amazon_sports": "amazon_sports_s3rec.txt",
    "amazon_games": "amazon_video_games_sasrec.txt",
}
SHARED_DATA_NAME = {"amazon_sports": "amazon_sports", "amazon_games": "amazon_video_games"}
SHARED_SETTINGS = {"ce": (128, 50, 0), "cce": (128, 50, 0), "cce_neg": (128, 50, 511)}

# CCE- in the SASRec configs: one set of negatives per block of 128 consecutive positions, with 16x
# the reference's count (n -> 16(n + 1) - 1). On the two Amazon sets and synthetic_1m it matched
# or beat per-row negatives at the reference's count, in 3.6-5x less step time at the Zvuk shape
# (docs/decisions/009). The reference's own setting: loss.sharing='row' and the count above.
CCE_NEG_SHARING = "block"
CCE_NEG_MULTIPLE = 16


def cce_neg_negatives(reference: int) -> int:
    """The block negatives of the SASRec ``cce_neg`` configs for a reference count ``n``."""
    return (reference + 1) * CCE_NEG_MULTIPLE - 1


def _set_loss(c: ml_collections.ConfigDict, loss: str, negatives: int) -> None:
    c.loss.type = loss
    c.loss.num_negatives = negatives
    if loss == "cce_neg":
        c.loss.sharing = CCE_NEG_SHARING
        c.loss.num_negatives = cce_neg_negatives(negatives)


# BERT4Rec: dataset -> loss -> (batch_size, max_len, num_negatives)
BERT4REC_SETTINGS = {
    "zvuk": {"cce": (1024, 128, 0), "cce_neg": (1024, 128, 2047)},
    "megamarket": {"cce": (2048, 320, 0), "cce_neg": (2048, 320, 4095)},
    "30music": {"cce": (256, 720, 0), "cce_neg": (256, 720, 4095)},
    "gowalla": {"cce": (1024, 320, 0), "cce_neg": (1024, 320, 511)},
    "beauty": {"cce": (1024, 32, 0), "cce_neg": (1024, 32, 511)},
    "movielens_20m": {"cce": (256, 512, 0), "cce_neg": (256, 512, 511)},
}
MASK_PROB = 0.2
AMAZON_MASK_PROB = 0.6
LAST_ITEM_MASK_PROB = 0.1


def command(config_file: str) -> str:
    """The training command of ``configs/<config_file>.py``."""
    return (f"python -m experiments.train --config configs/{config_file}.py "
            f"--workdir runs/{config_file}")


def benchmark_config(dataset: str, loss: str) -> ml_collections.ConfigDict:
    """SASRec on reference benchmark ``dataset`` (one of ``SETTINGS``) trained with ``loss``."""
    if dataset not in SETTINGS or loss not in SETTINGS[dataset]:
        raise ValueError(f"no reference setting for {dataset}/{loss}: datasets {sorted(SETTINGS)}, "
                         f"losses {sorted(SETTINGS['zvuk'])}")
    batch, length, negatives = SETTINGS[dataset][loss]
    c = run_config(dataset)
    c.model.max_len = length
    c.train.batch_size = batch
    _set_loss(c, loss, negatives)
    c.workdir = f"runs/{dataset}_{loss}"
    return c


def shared_config(dataset: str, loss: str) -> ml_collections.ConfigDict:
    """SASRec on one of the leave-one-out Amazon sets in ``$DATA_DIR`` (default ``data/``)."""
    if dataset not in SHARED or loss not in SHARED_SETTINGS:
        raise ValueError(f"no setting for {dataset}/{loss}: datasets {sorted(SHARED)}, "
                         f"losses {sorted(SHARED_SETTINGS)}")
    batch, length, negatives = SHARED_SETTINGS[loss]
    c = run_config(SHARED_DATA_NAME[dataset])
    c.data.path = os.path.join(os.environ.get("DATA_DIR", "data"), SHARED[dataset])
    c.model.max_len = length
    c.model.hidden = 64
    c.model.num_heads = 1
    c.model.dropout = 0.3
    c.train.batch_size = batch
    c.train.max_epochs = 200
    c.train.patience = 10
    _set_loss(c, loss, negatives)
    c.workdir = f"runs/{dataset}_{loss}"
    return c


def _as_bert4rec(c: ml_collections.ConfigDict, mask_prob: float, workdir: str) -> ml_collections.ConfigDict:
    c.model.name = "bert4rec"
    c.model.mask_prob = mask_prob
    c.model.last_item_mask_prob = LAST_ITEM_MASK_PROB
    c.model.head_transform = True
    c.workdir = workdir
    return c


def bert4rec_benchmark_config(dataset: str, loss: str) -> ml_collections.ConfigDict:
    """BERT4Rec on reference benchmark ``dataset`` with ``loss`` ('cce' or 'cce_neg')."""
    if dataset not in BERT4REC_SETTINGS or loss not in BERT4REC_SETTINGS[dataset]:
        raise ValueError(f"no BERT4Rec setting for {dataset}/{loss}: datasets "
                         f"{sorted(BERT4REC_SETTINGS)}, losses ['cce', 'cce_neg']")
    batch, length, negatives = BERT4REC_SETTINGS[dataset][loss]
    c = benchmark_config(dataset, loss)
    c.model.max_len = length
    c.train.batch_size = batch
    c.loss.num_negatives = negatives
    c.loss.sharing = "row"  # the block default was measured with SASRec only
    return _as_bert4rec(c, MASK_PROB, f"runs/{dataset}_bert4rec_{loss}")


def bert4rec_shared_config(dataset: str, loss: str) -> ml_collections.ConfigDict:
    """BERT4Rec on one of the leave-one-out Amazon sets: ``shared_config`` plus the cloze fields."""
    c = shared_config(dataset, loss)
    c.loss.sharing = "row"  # the block default was measured with SASRec only
    c.loss.num_negatives = SHARED_SETTINGS[loss][2]
    # BERT4Rec's validation NDCG stays flat for the first epochs (it must learn to attend to
    # neighbours before next-item scores move): allow a longer plateau than SASRec's 10.
    c.train.patience = 20
    return _as_bert4rec(c, AMAZON_MASK_PROB, f"runs/{dataset}_bert4rec_{loss}")


def synthetic_config(loss: str = "cce") -> ml_collections.ConfigDict:
    """SASRec on the built-in synthetic data: small enough to beat popularity in ~2 min on a CPU."""
    c = run_config("synthetic")
    c.model.hidden = 64
    c.model.max_len = 32
    c.model.dropout = 0.2
    c.loss.type = loss
    c.train.batch_size = 128
    c.train.max_epochs = 4
    c.train.patience = 2
    c.train.window_stride = 25
    c.workdir = f"runs/synthetic_{loss}"
    return c


# A synthetic world whose catalog is about 10^6 items after filtering (983,760 with these values),
# so that the loss, not the transformer, dominates a step: where full softmax and sampled softmax
# differ most in cost. The Amazon sets' model scale; the reference's Zvuk negative count.
LARGE_SYNTHETIC = dict(n_users=200_000, n_items=1_200_000, n_clusters=5_000, zipf_exponent=0.5)
LARGE_SYNTHETIC_SETTINGS = {"cce": (256, 50, 0), "cce_neg": (256, 50, 2047)}


def large_synthetic_config(loss: str = "cce") -> ml_collections.ConfigDict:
    """SASRec on a synthetic set of about 10^6 items (a GPU workload: see LARGE_SYNTHETIC)."""
    if loss not in LARGE_SYNTHETIC_SETTINGS:
        raise ValueError(f"no large-catalog setting for {loss}: use one of "
                         f"{sorted(LARGE_SYNTHETIC_SETTINGS)}")
    batch, length, negatives = LARGE_SYNTHETIC_SETTINGS[loss]
    c = run_config("synthetic")
    for field, value in LARGE_SYNTHETIC.items():
        c.data.synthetic[field] = value
    c.data.min_item_count = 2
    c.model.hidden = 64
    c.model.num_heads = 1
    c.model.max_len = length
    c.model.dropout = 0.2
    c.train.batch_size = batch
    c.train.max_epochs = 200
    c.train.patience = 5
    _set_loss(c, loss, negatives)
    c.workdir = f"runs/synthetic_1m_{loss}"
    return c

