"""SASRec + Cut Cross-Entropy (CCE) on beauty, the reference's batch / length / negatives.

Run: python -m experiments.train --config configs/beauty_cce.py --workdir runs/beauty_cce
"""

from srs_jax.config.presets import benchmark_config


def get_config():
    return benchmark_config("beauty", "cce")
