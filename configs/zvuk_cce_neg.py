"""SASRec + sampled Cut Cross-Entropy (CCE-) on zvuk, the reference's batch / length / negatives.

Run: python -m experiments.train --config configs/zvuk_cce_neg.py --workdir runs/zvuk_cce_neg
"""

from srs_jax.config.presets import benchmark_config


def get_config():
    return benchmark_config("zvuk", "cce_neg")
