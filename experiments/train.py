"""Trains a model: ``python -m experiments.train --config configs/zvuk_cce.py [--config.a.b=v ...]
[--workdir DIR] [--resume]``. Without ``--config`` it trains the synthetic CPU demo
(``configs/synthetic_cce.py``)."""

from __future__ import annotations

import os

from absl import flags
from ml_collections import config_flags

from srs_jax.training import cli as _cli

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "..", "configs", "synthetic_cce.py"),
    "Config file (configs/*.py); override fields with --config.<field>=<value>.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default: config.workdir).")
_RESUME = flags.DEFINE_bool("resume", False, "Continue the run in --workdir from its latest checkpoint.")


def main(argv):
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments {argv[1:]}: use --config, --workdir, --resume")
    from srs_jax.training.loop import train

    train(_CONFIG.value, _WORKDIR.value, resume=_RESUME.value)


if __name__ == "__main__":
    _cli.run_main(main)
