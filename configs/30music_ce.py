"""SASRec + full cross-entropy (CE) on 30music, the reference's batch / length / negatives.

Run: python -m experiments.train --config configs/30music_ce.py --workdir runs/30music_ce
"""

from srs_jax.config.presets import benchmark_config


def get_config():
    return benchmark_config("30music", "ce")
