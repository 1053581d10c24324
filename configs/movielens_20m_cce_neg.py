"""SASRec + sampled Cut Cross-Entropy (CCE-) on movielens_20m: the reference's batch and length;
negatives shared by blocks of 128 positions, 16x the reference's 511 (docs/decisions/009).
The reference's per-row setting: --config.loss.sharing=row --config.loss.num_negatives=511

Run: python -m experiments.train --config configs/movielens_20m_cce_neg.py --workdir runs/movielens_20m_cce_neg
"""

from srs_jax.config.presets import benchmark_config


def get_config():
    return benchmark_config("movielens_20m", "cce_neg")
