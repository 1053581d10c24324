"""SASRec + sampled Cut Cross-Entropy (CCE-) on megamarket: the reference's batch and length;
negatives shared by blocks of 128 positions, 16x the reference's 1023 (docs/decisions/009).
The reference's per-row setting: --config.loss.sharing=row --config.loss.num_negatives=1023

Run: python -m experiments.train --config configs/megamarket_cce_neg.py --workdir runs/megamarket_cce_neg
"""

from srs_jax.config.presets import benchmark_config


def get_config():
    return benchmark_config("megamarket", "cce_neg")
