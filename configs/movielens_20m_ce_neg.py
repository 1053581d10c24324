"""SASRec + sampled cross-entropy (CE-) on movielens_20m, the reference's batch / length / negatives.

Run: python -m experiments.train --config configs/movielens_20m_ce_neg.py --workdir runs/movielens_20m_ce_neg
"""

from srs_jax.config.presets import benchmark_config


def get_config():
    return benchmark_config("movielens_20m", "ce_neg")
