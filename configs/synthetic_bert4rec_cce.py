"""BERT4Rec + CCE on the built-in synthetic data: a CPU demo of the cloze model.

Run: python -m experiments.train --config configs/synthetic_bert4rec_cce.py --workdir /tmp/srs_bert4rec
Same data, sizes and windows as ``configs/synthetic_cce.py`` (SASRec), plus the cloze fields.
BERT4Rec starts slowly (a masked position has no item of its own: it must first learn to attend
to its neighbours), so it trains longer and with lr 3e-3: on a 2-core CPU, 12 epochs of ~12 s
reached test NDCG@10 0.149 vs popularity 0.003 (docs/results.md has the command).
"""

from srs_jax.config.presets import LAST_ITEM_MASK_PROB, MASK_PROB, synthetic_config


def get_config():
    c = synthetic_config("cce")
    c.model.name = "bert4rec"
    c.model.mask_prob = MASK_PROB
    c.model.last_item_mask_prob = LAST_ITEM_MASK_PROB
    c.model.head_transform = True
    c.train.lr = 3e-3
    c.train.max_epochs = 12
    c.train.patience = 3
    c.workdir = "runs/synthetic_bert4rec_cce"
    return c
