"""BERT4Rec run settings; every ``configs/<dataset>_bert4rec_<loss>.py`` calls one helper here.

The network keeps the reference's SASRec sizes (2 blocks, 2 heads, hidden 256, dropout 0.1, from
``configs/base.py``) and adds the cloze fields of ``srs_jax/models/bert4rec.py``:

* ``mask_prob`` 0.2 (issue 6; the BERT4Rec paper's best value on ML-1m / ML-20m), 0.6 on the two
  Amazon leave-one-out sets (the authors' Amazon Beauty script ``run_beauty.sh`` in
  github.com/FeiSun/BERT4Rec: ``masked_lm_prob=0.6``, ``max_seq_length=50``);
* ``last_item_mask_prob`` 0.1: the authors' data generator (``gen_data_fin.py``) writes
  ``dupe_factor=10`` cloze copies plus one "mask only the last item" copy per sequence, i.e.
  1/11 of the samples are next-item samples;
* ``head_transform`` True: the paper's GELU projection + LayerNorm before the tied output.

Batch / length / negatives for the six benchmarks are the reference's BERT4Rec rows (issue 6).
"""

from __future__ import annotations

import ml_collections

from configs import benchmarks

# dataset -> loss -> (batch_size, max_len, num_negatives)
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


def _as_bert4rec(c: ml_collections.ConfigDict, mask_prob: float, workdir: str) -> ml_collections.ConfigDict:
    c.model.name = "bert4rec"
    c.model.mask_prob = mask_prob
    c.model.last_item_mask_prob = LAST_ITEM_MASK_PROB
    c.model.head_transform = True
    c.workdir = workdir
    return c


def benchmark_config(dataset: str, loss: str) -> ml_collections.ConfigDict:
    """BERT4Rec on reference benchmark ``dataset`` with ``loss`` ('cce' or 'cce_neg')."""
    if dataset not in BERT4REC_SETTINGS or loss not in BERT4REC_SETTINGS[dataset]:
        raise ValueError(f"no BERT4Rec setting for {dataset}/{loss}: datasets {sorted(BERT4REC_SETTINGS)}, "
                         "losses ['cce', 'cce_neg']")
    batch, length, negatives = BERT4REC_SETTINGS[dataset][loss]
    c = benchmarks.benchmark_config(dataset, loss)
    c.model.max_len = length
    c.train.batch_size = batch
    c.loss.num_negatives = negatives
    return _as_bert4rec(c, MASK_PROB, f"runs/{dataset}_bert4rec_{loss}")


def shared_config(dataset: str, loss: str) -> ml_collections.ConfigDict:
    """BERT4Rec on one of the leave-one-out Amazon sets (``$DATA_DIR``, default ``data/``):
    the SASRec settings of ``configs/benchmarks.shared_config`` plus the cloze fields."""
    c = benchmarks.shared_config(dataset, loss)
    # BERT4Rec's validation NDCG stays flat for the first epochs (it must learn to attend to
    # neighbours before next-item scores move): allow a longer plateau than SASRec's 10.
    c.train.patience = 20
    return _as_bert4rec(c, AMAZON_MASK_PROB, f"runs/{dataset}_bert4rec_{loss}")
