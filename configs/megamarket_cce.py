"""SASRec + Cut Cross-Entropy (CCE) on megamarket, the reference's batch / length / negatives.

Run: python -m experiments.train --config configs/megamarket_cce.py --workdir runs/megamarket_cce
"""

from srs_jax.config.presets import benchmark_config


def get_config():
    return benchmark_config("megamarket", "cce")
