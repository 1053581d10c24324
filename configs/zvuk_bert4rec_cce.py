"""BERT4Rec + Cut Cross-Entropy (CCE) on zvuk: the reference's BERT4Rec batch / length.

Run: python -m experiments.train --config configs/zvuk_bert4rec_cce.py --workdir runs/zvuk_bert4rec_cce
"""

from srs_jax.config.presets import bert4rec_benchmark_config


def get_config():
    return bert4rec_benchmark_config("zvuk", "cce")
