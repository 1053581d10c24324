"""SASRec + sampled cross-entropy (CE-) on megamarket, the reference's batch / length / negatives.

Run: python -m experiments.train --config configs/megamarket_ce_neg.py --workdir runs/megamarket_ce_neg
"""

from srs_jax.config.presets import benchmark_config


def get_config():
    return benchmark_config("megamarket", "ce_neg")
