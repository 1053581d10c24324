"""SASRec + CCE on the built-in synthetic data: the CPU demo and the default of experiments.train.

Run: python -m experiments.train --workdir /tmp/srs_demo
 (= python -m experiments.train --config configs/synthetic_cce.py --workdir /tmp/srs_demo)
Small model and short sequences so that it beats the popularity baseline in ~2 minutes on a CPU.
"""

from srs_jax.config.presets import synthetic_config


def get_config():
    return synthetic_config("cce")
