"""SASRec + sampled Cut Cross-Entropy (CCE-) on amazon_sports (leave-one-out, full ranking, history removed).
Negatives shared by blocks of 128 positions: 16x 511, the reference's count on its small catalogs
(docs/decisions/009).

Run: DATA_DIR=../shared/data python -m experiments.train --config configs/amazon_sports_cce_neg.py --workdir runs/amazon_sports_cce_neg
"""

from srs_jax.config.presets import shared_config


def get_config():
    return shared_config("amazon_sports", "cce_neg")
