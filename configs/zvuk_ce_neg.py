"""SASRec + sampled cross-entropy (CE-) on zvuk, the reference's batch / length / negatives.

Run: python -m experiments.train --config configs/zvuk_ce_neg.py --workdir runs/zvuk_ce_neg
"""

from srs_jax.config.presets import benchmark_config


def get_config():
    return benchmark_config("zvuk", "ce_neg")
