"""BERT4Rec + sampled Cut Cross-Entropy (CCE-) on gowalla: the reference's BERT4Rec batch / length / negatives.

Run: python -m experiments.train --config configs/gowalla_bert4rec_cce_neg.py --workdir runs/gowalla_bert4rec_cce_neg
"""

from configs._bert4rec_settings import benchmark_config


def get_config():
    return benchmark_config("gowalla", "cce_neg")
