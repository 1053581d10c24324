"""BERT4Rec + sampled Cut Cross-Entropy (CCE-) on 30music: the reference's BERT4Rec batch / length / negatives.

Run: python -m experiments.train --config configs/30music_bert4rec_cce_neg.py --workdir runs/30music_bert4rec_cce_neg
"""

from configs._bert4rec_settings import benchmark_config


def get_config():
    return benchmark_config("30music", "cce_neg")
