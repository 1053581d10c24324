"""The data settings' names and defaults, re-exported from ``srs_jax.config`` (where they live).

``validate_config(cfg)`` checks a ``config.data`` (ConfigDict, dict or ``DataSpec``) and returns
the ``DataSpec``; ``DataSpec`` validates itself, so code given one needs no further check.
"""

from __future__ import annotations

from srs_jax.config.defaults import DATASETS, dataset_config, dataset_defaults
from srs_jax.config.names import FORMATS, SPLITS
from srs_jax.config.specs import DataSpec


def validate_config(cfg) -> DataSpec:
    """``cfg`` as a validated ``DataSpec`` (one-line ``ConfigError`` otherwise)."""
    return cfg if isinstance(cfg, DataSpec) else DataSpec.from_dict(cfg)


__all__ = ["DATASETS", "FORMATS", "SPLITS", "DataSpec", "dataset_config", "dataset_defaults",
           "validate_config"]
