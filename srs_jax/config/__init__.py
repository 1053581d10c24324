"""Run configuration: the one reader of the ``ml_collections`` config (bottom layer of srs_jax).

* ``names``: every choice a config can name (loss types, samplers, datasets, ...).
* ``specs``: the frozen specs (``RunSpec`` and its sections) with their defaults and validation.
* ``defaults``: default ConfigDicts built from the specs (``run_config``, ``dataset_config``).
* ``load``: ``load_specs(config) -> RunSpec`` (validation, 'auto' resolution).
* ``launch``: ``resolve_launch(mesh_spec, environ)``: one process or one of several (config,
  ``SRS_JAX_*`` variables, or a cluster launcher).
* ``presets``: the reference benchmark settings the ``configs/*.py`` files call.
"""

from srs_jax.config.defaults import DATASETS, dataset_config, dataset_defaults, run_config
from srs_jax.config.launch import Launch, resolve_launch
from srs_jax.config.load import load_specs, resolve_compute_dtype
from srs_jax.config.specs import (
    ColumnsSpec,
    ConfigError,
    DataSpec,
    EvalSpec,
    LossSpec,
    MeshSpec,
    ModelSpec,
    RunSpec,
    SyntheticSpec,
    TrainSpec,
)

__all__ = [
    "ColumnsSpec", "ConfigError", "DATASETS", "DataSpec", "EvalSpec", "Launch", "LossSpec",
    "MeshSpec", "ModelSpec", "RunSpec", "SyntheticSpec", "TrainSpec", "dataset_config",
    "dataset_defaults", "load_specs", "resolve_compute_dtype", "resolve_launch", "run_config",
]
