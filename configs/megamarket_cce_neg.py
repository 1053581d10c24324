"""SASRec + sampled Cut Cross-Entropy (CCE-) on megamarket, the reference's batch / length / negatives.

Run: python -m experiments.train --config configs/megamarket_cce_neg.py --workdir runs/megamarket_cce_neg
"""

from srs_jax.config.presets import benchmark_config


def get_config():
    return benchmark_config("megamarket", "cce_neg")
