"""SASRec + sampled Cut Cross-Entropy (CCE-) on 30music: the reference's batch and length;
negatives shared by blocks of 128 positions, 16x the reference's 4095 (docs/decisions/009).
The reference's per-row setting: --config.loss.sharing=row --config.loss.num_negatives=4095

Run: python -m experiments.train --config configs/30music_cce_neg.py --workdir runs/30music_cce_neg
"""

from srs_jax.config.presets import benchmark_config


def get_config():
    return benchmark_config("30music", "cce_neg")
