"""Typed, frozen run specs: the one place a run config is read, validated and resolved.

``load_specs(config) -> RunSpec`` takes the ``ml_collections.ConfigDict`` of a config file (or the
dict of a run's ``config.json``, or a plain dict) and returns frozen dataclasses whose field names
are the config keys, so ``spec.loss.type`` reads as ``config.loss.type`` did. Missing keys take
the defaults below (the dataset defaults of ``srs_jax.config.defaults`` for ``data``); unknown keys
and bad values raise ``ConfigError`` with one line naming ``config.<field>`` and the fix. The only
'auto' setting, ``model.compute_dtype``, is resolved here (bfloat16 on GPU/TPU, float32 on CPU).

Every spec has ``.to_dict()`` (plain dicts, tuples kept), and ``load_specs`` accepts that dict back.
Specs validate themselves on construction, so ``LossSpec(type="ce_neg", num_negatives=8)`` or
``dataclasses.replace(spec, ...)`` is checked like a config file.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Optional

from srs_jax.config import names


class ConfigError(ValueError):
    """A run config that cannot work: one line naming ``config.<field>`` and the fix."""


def fail(field: str, value: Any, fix: str) -> typing.NoReturn:
    raise ConfigError(f"config.{field}={value!r} is invalid: {fix}")


def _choice(section: str, field: str, value, allowed) -> None:
    if value not in allowed:
        fail(f"{section}.{field}", value, f"use one of {list(allowed)}")


def _positive(section: str, spec, *fields: str) -> None:
    for field in fields:
        if getattr(spec, field) < 1:
            fail(f"{section}.{field}", getattr(spec, field), "must be a positive integer")


class _Spec:
    """Shared behaviour of the frozen spec dataclasses."""

    SECTION = ""

    def to_dict(self) -> dict:
        return {f.name: (getattr(self, f.name).to_dict() if isinstance(getattr(self, f.name), _Spec)
                         else getattr(self, f.name)) for f in dataclasses.fields(self)}

    def get(self, name: str, default=None):
        """``getattr(spec, name, default)``: the ConfigDict method, for code written against it."""
        return getattr(self, name, default)

    def __getitem__(self, name: str):
        return getattr(self, name)

    def __contains__(self, name: str) -> bool:
        return name in {f.name for f in dataclasses.fields(self)}

    def keys(self):
        return [f.name for f in dataclasses.fields(self)]

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = _coerce(_path(self.SECTION, f.name), getattr(self, f.name), hints[f.name])
            object.__setattr__(self, f.name, value)
        self.validate()

    def validate(self) -> None:
        """Raises ``ConfigError`` for values that cannot work (each spec overrides it)."""

    @classmethod
    def from_dict(cls, values, section: str | None = None):
        """The spec from a (possibly partial) dict; unknown keys raise ``ConfigError``."""
        section = cls.SECTION if section is None else section
        values = as_dict(values, section or "config")
        hints = typing.get_type_hints(cls)
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"config.{_path(section, unknown[0])} is not a known field: use one "
                              f"of {known}")
        kwargs = {}
        for name, value in values.items():
            sub = hints[name]
            if isinstance(sub, type) and issubclass(sub, _Spec):
                value = sub.from_dict(value, _path(section, name))
            kwargs[name] = value
        return cls(**kwargs)


def _path(section: str, name: str) -> str:
    return f"{section}.{name}" if section else name


def as_dict(values, section: str) -> dict:
    if values is None:
        return {}
    if isinstance(values, _Spec):
        return values.to_dict()
    if hasattr(values, "to_dict"):  # ml_collections.ConfigDict
        return values.to_dict()
    if isinstance(values, dict):
        return dict(values)
    raise ConfigError(f"config.{section} must be a ConfigDict or dict, got {type(values).__name__}")


def _coerce(field: str, value, hint):
    """``value`` as the field's type (ints from floats like 5.0, tuples from lists); ConfigError else."""
    optional = typing.get_origin(hint) is typing.Union and type(None) in typing.get_args(hint)
    if optional:
        if value is None:
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if isinstance(hint, type) and issubclass(hint, _Spec):
        return value if isinstance(value, hint) else hint.from_dict(value, field)
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            raise TypeError
        if hint is int:
            if isinstance(value, bool) or value is None or float(value) != int(float(value)):
                raise TypeError
            return int(value)
        if hint is float:
            if isinstance(value, bool) or value is None:
                raise TypeError
            return float(value)
        if hint is str:
            if not isinstance(value, str):
                raise TypeError
            return value
        if typing.get_origin(hint) is tuple:
            (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
            if isinstance(value, (str, bytes)) or value is None:
                raise TypeError
            return tuple(_coerce(field, v, item) for v in value)
    except (TypeError, ValueError):
        name = getattr(hint, "__name__", str(hint))
        raise ConfigError(f"config.{field}={value!r} is invalid: give a {name}"
                          f"{' or None' if optional else ''}") from None
    return value


# ---------------------------------------------------------------------------------------- data


@dataclasses.dataclass(frozen=True)
class ColumnsSpec(_Spec):
    """Raw column names; ``rating`` / ``event`` only feed the row filters (None = not read)."""

    SECTION = "data.columns"
    user: str = "user"
    item: str = "item"
    time: str = "time"
    rating: Optional[str] = None
    event: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class SyntheticSpec(_Spec):
    """The built-in generator (``srs_jax.data.synthetic``): a toy set for the CPU."""

    SECTION = "data.synthetic"
    n_users: int = 5_000
    n_items: int = 2_000
    mean_length: float = 30.0
    min_length: int = 5
    max_length: int = 1_000
    length_sigma: float = 0.8
    zipf_exponent: float = 1.0
    n_clusters: int = 50
    n_successors: int = 4
    p_follow: float = 0.6
    p_switch: float = 0.1
    mean_gap_s: float = 86_400.0
    time_span_s: int = 60 * 86_400
    seed: int = 0
    growth: float = 0.0  # 0: every item and user exists from the start; 1: released over time

    def validate(self):
        _positive(self.SECTION, self, "n_users", "n_items", "min_length", "max_length", "n_clusters")
        if self.min_length > self.max_length:
            fail(f"{self.SECTION}.min_length", self.min_length, "must be <= max_length")
        for field in ("p_follow", "p_switch", "growth"):
            if not 0.0 <= getattr(self, field) <= 1.0:
                fail(f"{self.SECTION}.{field}", getattr(self, field), "must be in [0, 1]")


@dataclasses.dataclass(frozen=True)
class DataSpec(_Spec):
    """``config.data`` (fields documented in ``srs_jax.config.defaults``)."""

    SECTION = "data"
    name: str = "synthetic"
    path: Optional[str] = None
    format: str = "synthetic"
    separator: str = ","
    columns: ColumnsSpec = dataclasses.field(default_factory=ColumnsSpec)
    time_format: Optional[str] = None
    time_until: Optional[float] = None
    min_rating: Optional[float] = None
    event_value: Optional[int] = None
    min_item_count: int = 5
    min_user_count: int = 3
    split: str = "global_temporal"
    time_quantile: float = 0.9
    val_user_fraction: float = 0.05
    seed: int = 42
    cache_dir: str = "~/.cache/srs_jax"
    use_cache: bool = True
    source_url: str = ""
    synthetic: SyntheticSpec = dataclasses.field(default_factory=SyntheticSpec)

    def validate(self):
        _choice("data", "format", self.format, names.FORMATS)
        _choice("data", "split", self.split, names.SPLITS)
        if not 0.0 < self.time_quantile < 1.0:
            fail("data.time_quantile", self.time_quantile, "must be in (0, 1)")
        if not 0.0 <= self.val_user_fraction < 1.0:
            fail("data.val_user_fraction", self.val_user_fraction, "must be in [0, 1)")
        for field in ("min_item_count", "min_user_count"):
            if getattr(self, field) < 0:
                fail(f"data.{field}", getattr(self, field), "must be >= 0")


# --------------------------------------------------------------------------------------- model


@dataclasses.dataclass(frozen=True)
class ModelSpec(_Spec):
    """``config.model``: the network (``srs_jax.models``); the cloze fields are BERT4Rec's."""

    SECTION = "model"
    name: str = "sasrec"
    hidden: int = 256
    num_blocks: int = 2
    num_heads: int = 2
    dropout: float = 0.1
    max_len: int = 128
    compute_dtype: str = "auto"
    mask_prob: float = 0.2
    last_item_mask_prob: float = 0.1
    head_transform: bool = True

    def validate(self):
        _choice("model", "name", self.name, names.MODEL_NAMES)
        _positive("model", self, "hidden", "num_blocks", "num_heads", "max_len")
        if self.hidden % self.num_heads:
            fail("model.hidden", self.hidden, f"must be a multiple of model.num_heads={self.num_heads}")
        if not 0.0 <= self.dropout < 1.0:
            fail("model.dropout", self.dropout, "must be in [0, 1)")
        _choice("model", "compute_dtype", self.compute_dtype, names.COMPUTE_DTYPES)
        if not 0.0 < self.mask_prob <= 1.0:
            fail("model.mask_prob", self.mask_prob, "must be in (0, 1]")
        if not 0.0 <= self.last_item_mask_prob <= 1.0:
            fail("model.last_item_mask_prob", self.last_item_mask_prob, "must be in [0, 1]")



# ---------------------------------------------------------------------------------------- loss


@dataclasses.dataclass(frozen=True)
class LossSpec(_Spec):
    """``config.loss`` (the losses are defined in ``srs_jax.losses``)."""

    SECTION = "loss"
    type: str = "cce"
    num_negatives: int = 0
    sampler: str = "uniform"
    sharing: str = "row"
    impl: str = "auto"
    gbce_t: float = 0.75
    sce_n_buckets: int = 443
    sce_bucket_size_x: int = 443
    sce_bucket_size_y: int = 512
    sce_mix_x: bool = True
    sce_item_chunk: int = 65536

    @property
    def sampled(self) -> bool:
        return self.type in names.SAMPLED_LOSSES

    def validate(self):
        _choice("loss", "type", self.type, names.LOSS_TYPES)
        if self.sampled and self.num_negatives < 1:
            fail("loss.num_negatives", self.num_negatives, f"loss {self.type} needs >= 1 negatives")
        _choice("loss", "sampler", self.sampler, names.SAMPLERS)
        _choice("loss", "sharing", self.sharing, names.SHARINGS)
        _choice("loss", "impl", self.impl, names.IMPLS)
        if self.type == "cce_neg":
            _choice("loss", "sharing", self.sharing, names.KERNEL_SHARINGS)
            if self.impl == "naive":
                fail("loss.impl", self.impl, "cce_neg has no 'naive' version: use 'auto', 'pallas', "
                     "'interpret' or 'xla'")

        elif self.type in ("ce_neg", "bce", "bce_plus"):
            _choice("loss", "sharing", self.sharing, names.PLAIN_SHARINGS)
        if self.type == "gbce" and (self.sampler != "uniform" or self.sharing != "row"):
            fail("loss.sampler", self.sampler, "gbce supports only sampler='uniform' and "
                 "sharing='row' (its calibration assumes uniform per-row negatives)")
        if not 0.0 <= self.gbce_t <= 1.0:
            fail("loss.gbce_t", self.gbce_t, "must be in [0, 1]")
        _positive("loss", self, "sce_n_buckets", "sce_bucket_size_x", "sce_bucket_size_y",
                  "sce_item_chunk")


# --------------------------------------------------------------------------------------- train


@dataclasses.dataclass(frozen=True)
class TrainSpec(_Spec):
    """``config.train``: optimiser, schedule, batching, stopping, checkpoints."""

    SECTION = "train"
    batch_size: int = 256
    lr: float = 1e-3
    b1: float = 0.9
    b2: float = 0.98
    eps: float = 1e-8
    max_epochs: int = 20
    patience: int = 4
    warmup_steps: int = 0
    schedule: str = "constant"
    grad_clip: float = 0.0
    eval_batch_size: int = 1024
    prefetch: int = 2
    log_every: int = 50
    window_stride: Optional[int] = None
    max_train_seconds: float = 0.0
    checkpoint_every_steps: int = 0

    def validate(self):
        _positive("train", self, "batch_size", "eval_batch_size", "max_epochs", "patience", "log_every")
        if self.prefetch < 0:
            fail("train.prefetch", self.prefetch, "must be >= 0 (0 = no background prefetch)")
        if not self.lr > 0:
            fail("train.lr", self.lr, "must be > 0")
        for field in ("b1", "b2"):
            if not 0.0 <= getattr(self, field) < 1.0:
                fail(f"train.{field}", getattr(self, field), "must be in [0, 1)")
        _choice("train", "schedule", self.schedule, names.SCHEDULES)
        for field in ("warmup_steps", "grad_clip", "max_train_seconds", "checkpoint_every_steps"):
            if getattr(self, field) < 0:
                fail(f"train.{field}", getattr(self, field), "must be >= 0")
        if self.window_stride is not None and self.window_stride < 1:
            fail("train.window_stride", self.window_stride, "use None (one window per user) or >= 1")


# ---------------------------------------------------------------------------------------- eval


@dataclasses.dataclass(frozen=True)
class EvalSpec(_Spec):
    """``config.eval``: cutoffs, metrics, the monitored metric, top-K search blocks."""

    SECTION = "eval"
    ks: tuple[int, ...] = (1, 5, 10, 20, 100)
    metrics: tuple[str, ...] = names.METRICS
    monitor: str = "ndcg@10"
    coverage_mode: str = "reference"
    user_chunk: int = 4096
    item_chunk: int = 65536
    popularity_baseline: bool = True

    def validate(self):
        if not self.ks or min(self.ks) < 1:
            fail("eval.ks", self.ks, "give a non-empty list of positive cutoffs, e.g. [1, 5, 10]")
        for metric in self.metrics:
            _choice("eval", "metrics", metric, names.METRICS)
        name, _, k = self.monitor.partition("@")
        if not k.isdigit() or int(k) not in self.ks or not name:
            fail("eval.monitor", self.monitor, f"use '<metric>@<k>' with k in eval.ks={list(self.ks)}")
        _choice("eval", "coverage_mode", self.coverage_mode, names.COVERAGE_MODES)
        _positive("eval", self, "user_chunk", "item_chunk")


# ---------------------------------------------------------------------------------------- mesh


@dataclasses.dataclass(frozen=True)
class MeshSpec(_Spec):
    """``config.mesh``: the ``(data, vocab)`` device mesh (``srs_jax.parallel``); several
    processes (``srs_jax.config.launch``): ``coordinator_address`` / ``num_processes`` /
    ``process_id`` (0: from the environment), ``init_timeout_s`` (to reach the coordinator and
    the other processes), ``heartbeat_timeout_s`` (a silent process is declared dead)."""

    SECTION = "mesh"
    enabled: bool = True
    data: int = 0
    vocab: int = 1
    coordinator_address: str = ""
    num_processes: int = 0
    process_id: int = 0
    init_timeout_s: int = 300
    heartbeat_timeout_s: int = 100

    def validate(self):
        if self.data < 0:
            fail("mesh.data", self.data, "must be >= 0 (0 = every device not on vocab)")
        if self.vocab < 1:
            fail("mesh.vocab", self.vocab, "must be >= 1")
        _positive("mesh", self, "init_timeout_s", "heartbeat_timeout_s")
        if self.num_processes > 1:
            if not self.enabled:
                fail("mesh.enabled", self.enabled, "several processes train on one mesh: set "
                     "mesh.enabled=True or mesh.num_processes=0")
            if not self.coordinator_address:
                fail("mesh.coordinator_address", self.coordinator_address,
                     "mesh.num_processes > 1 needs the host:port of process 0")
            if not 0 <= self.process_id < self.num_processes:
                fail("mesh.process_id", self.process_id, f"must be in [0, {self.num_processes})")


# ----------------------------------------------------------------------------------------- run


@dataclasses.dataclass(frozen=True)
class RunSpec(_Spec):
    """A whole run: ``load_specs(config)``."""

    SECTION = ""
    seed: int = 42
    data: DataSpec = dataclasses.field(default_factory=DataSpec)
    model: ModelSpec = dataclasses.field(default_factory=ModelSpec)
    loss: LossSpec = dataclasses.field(default_factory=LossSpec)
    train: TrainSpec = dataclasses.field(default_factory=TrainSpec)
    eval: EvalSpec = dataclasses.field(default_factory=EvalSpec)
    mesh: MeshSpec = dataclasses.field(default_factory=MeshSpec)
    workdir: str = ""

    def validate(self):
        if self.mesh.enabled and self.mesh.vocab > 1:
            if self.loss.type not in names.KERNEL_LOSSES:
                fail("loss.type", self.loss.type, "with mesh.vocab > 1 use 'cce' or 'cce_neg' (the "
                     "only vocabulary-parallel losses), or set mesh.vocab=1")
            if self.loss.type == "cce_neg" and self.loss.sharing != "row":
                fail("loss.sharing", self.loss.sharing, "with mesh.vocab > 1 cce_neg draws negatives "
                     "per row: set config.loss.sharing=row and config.loss.num_negatives to a "
                     "per-row count (e.g. 2047), or set mesh.vocab=1")
            if self.train.batch_size % max(self.mesh.data, 1):
                fail("train.batch_size", self.train.batch_size,
                     f"must be a multiple of mesh.data={self.mesh.data}")
