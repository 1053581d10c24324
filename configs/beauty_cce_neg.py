"""SASRec + sampled Cut Cross-Entropy (CCE-) on beauty: the reference's batch and length;
negatives shared by blocks of 128 positions, 16x the reference's 511 (docs/decisions/009).
The reference's per-row setting: --config.loss.sharing=row --config.loss.num_negatives=511

Run: python -m experiments.train --config configs/beauty_cce_neg.py --workdir runs/beauty_cce_neg
"""

from srs_jax.config.presets import benchmark_config


def get_config():
    return benchmark_config("beauty", "cce_neg")
