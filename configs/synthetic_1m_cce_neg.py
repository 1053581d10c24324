"""SASRec + CCE- on a synthetic set of about 10^6 items (GPU; ~1M-item catalog, 200k users):
negatives shared by blocks of 128 positions, 16x the Zvuk reference's 2047 (docs/decisions/009).

Run: python -m experiments.train --config configs/synthetic_1m_cce_neg.py --workdir runs/synthetic_1m_cce_neg
"""

from srs_jax.config.presets import large_synthetic_config


def get_config():
    return large_synthetic_config("cce_neg")
