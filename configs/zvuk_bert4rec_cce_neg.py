"""BERT4Rec + sampled Cut Cross-Entropy (CCE-) on zvuk: the reference's BERT4Rec batch / length / negatives.

Run: python -m experiments.train --config configs/zvuk_bert4rec_cce_neg.py --workdir runs/zvuk_bert4rec_cce_neg
"""

from srs_jax.config.presets import bert4rec_benchmark_config


def get_config():
    return bert4rec_benchmark_config("zvuk", "cce_neg")
