"""SASRec + sampled Cut Cross-Entropy (CCE-) on zvuk: the reference's batch and length;
negatives shared by blocks of 128 positions, 16x the reference's 2047 (docs/decisions/009).
The reference's per-row setting: --config.loss.sharing=row --config.loss.num_negatives=2047

Run: python -m experiments.train --config configs/zvuk_cce_neg.py --workdir runs/zvuk_cce_neg
"""

from srs_jax.config.presets import benchmark_config


def get_config():
    return benchmark_config("zvuk", "cce_neg")
