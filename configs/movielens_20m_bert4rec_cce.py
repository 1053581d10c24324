"""BERT4Rec + Cut Cross-Entropy (CCE) on movielens_20m: the reference's BERT4Rec batch / length.

Run: python -m experiments.train --config configs/movielens_20m_bert4rec_cce.py --workdir runs/movielens_20m_bert4rec_cce
"""

from srs_jax.config.presets import bert4rec_benchmark_config


def get_config():
    return bert4rec_benchmark_config("movielens_20m", "cce")
