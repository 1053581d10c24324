"""``load_specs``: a run config (ConfigDict, dict, ``config.json``) -> validated ``RunSpec``."""

from __future__ import annotations

from srs_jax.config import names
from srs_jax.config.defaults import dataset_defaults
from srs_jax.config.specs import RunSpec, as_dict, fail

# Keys of earlier versions that are read and dropped when they hold the value every run now
# behaves as (key -> values accepted); any other value stops with a one-line error.
# ``mesh.lookup``: a hand-written shard_map input lookup that measured equal to XLA's gather
# (docs/decisions/020-shard-map-lookup-removed.md). ``loss.dc_accum`` / ``loss.row_sampling``:
# CCE- kernel variants the kernels no longer have (float32 dC, independent row draws;
# docs/decisions/01*.md).
RETIRED = {("mesh", "lookup"): ("auto", "xla"), ("loss", "dc_accum"): ("float32",),
           ("loss", "row_sampling"): ("independent",)}


def _drop_retired(values: dict) -> dict:
    for (section, key), accepted in RETIRED.items():
        sub = values.get(section)
        if isinstance(sub, dict) and key in sub:
            if sub[key] not in accepted:
                fail(f"{section}.{key}", sub[key], f"this option was removed (every run now "
                     f"uses {accepted[-1]!r}): delete it")
            values[section] = {k: v for k, v in sub.items() if k != key}
    return values


def resolve_compute_dtype(name: str) -> str:
    """'auto' -> 'float32' on CPU, 'bfloat16' on GPU/TPU; other names unchanged."""
    if name != "auto":
        return name
    # Imported here only: the commands' run-folder checks read configs before JAX loads (~0.6 s
    # instead of seconds per fault); only 'auto' needs the backend.
    import jax

    return "float32" if jax.default_backend() == "cpu" else "bfloat16"


def load_specs(config, *, resolve_auto: bool = True) -> RunSpec:
    """Validates ``config`` (ConfigDict, dict, ``config.json`` contents or a RunSpec) once.

    Missing ``data`` fields take the defaults of dataset ``data.name``; the 'auto' compute dtype
    is resolved for this process's backend (kept as 'auto' with ``resolve_auto=False``, which
    needs no JAX). Raises ``ConfigError`` (one line) on any unknown key
    or bad value.
    """
    values = _drop_retired(as_dict(config, "config"))
    data = as_dict(values.get("data"), "data")
    if data.get("name", "synthetic") in names.DATASETS:
        base = dataset_defaults(data.get("name", "synthetic"))
        for key in ("columns", "synthetic"):
            if key in data:
                data[key] = {**base[key], **as_dict(data[key], f"data.{key}")}
        data = {**base, **data}
    values["data"] = data
    model = as_dict(values.get("model"), "model")
    if resolve_auto:
        model["compute_dtype"] = resolve_compute_dtype(model.get("compute_dtype", "auto"))
    values["model"] = model
    return RunSpec.from_dict(values, "")
