"""BERT4Rec + Cut Cross-Entropy (CCE) on megamarket: the reference's BERT4Rec batch / length.

Run: python -m experiments.train --config configs/megamarket_bert4rec_cce.py --workdir runs/megamarket_bert4rec_cce
"""

from configs._bert4rec_settings import benchmark_config


def get_config():
    return benchmark_config("megamarket", "cce")
