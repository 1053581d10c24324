"""SASRec + Cut Cross-Entropy (CCE) on gowalla, the reference's batch / length / negatives.

Run: python -m experiments.train --config configs/gowalla_cce.py --workdir runs/gowalla_cce
"""

from srs_jax.config.presets import benchmark_config


def get_config():
    return benchmark_config("gowalla", "cce")
