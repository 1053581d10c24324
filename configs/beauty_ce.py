"""SASRec + full cross-entropy (CE) on beauty, the reference's batch / length / negatives.

Run: python -m experiments.train --config configs/beauty_ce.py --workdir runs/beauty_ce
"""

from srs_jax.config.presets import benchmark_config


def get_config():
    return benchmark_config("beauty", "ce")
