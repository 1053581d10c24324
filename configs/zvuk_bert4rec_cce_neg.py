"""BERT4Rec + sampled Cut Cross-Entropy (CCE-) on zvuk: the reference's BERT4Rec batch / length / negatives.

Run: python -m experiments.train --config configs/zvuk_bert4rec_cce_neg.py --workdir runs/zvuk_bert4rec_cce_neg
"""

from configs._bert4rec_settings import benchmark_config


def get_config():
    return benchmark_config("zvuk", "cce_neg")
