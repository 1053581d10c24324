"""SASRec + full cross-entropy (CE) on gowalla, the reference's batch / length / negatives.

Run: python -m experiments.train --config configs/gowalla_ce.py --workdir runs/gowalla_ce
"""

from srs_jax.config.presets import benchmark_config


def get_config():
    return benchmark_config("gowalla", "ce")
