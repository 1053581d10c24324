"""SASRec + sampled cross-entropy (CE-) on beauty, the reference's batch / length / negatives.

Run: python -m experiments.train --config configs/beauty_ce_neg.py --workdir runs/beauty_ce_neg
"""

from srs_jax.config.presets import benchmark_config


def get_config():
    return benchmark_config("beauty", "ce_neg")
