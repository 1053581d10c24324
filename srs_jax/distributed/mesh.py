"""The device mesh (``data`` x ``vocab``) and the shardings of batches, parameters and optimiser state.

``config.mesh`` (optional; a ConfigDict or dict):
  data   devices on the ``data`` axis (0 / None: all devices not used by ``vocab``)
  vocab  devices on the ``vocab`` axis (default 1: pure data parallelism)
  coordinator_address, num_processes, process_id   several hosts: passed to
         ``jax.distributed.initialize`` (empty / 0: single host, nothing is initialised)
  enabled  False: the trainer ignores the entry (lets a base config carry the fields so the
         command line can override them); default True
  lookup "auto" | "xla" | "shard_map": how the model reads input embeddings from a vocab-sharded
         table (``srs_jax.distributed.lookup``); default "auto"

Shardings: batches by rows over ``data``; every parameter replicated, except the item embedding
table (any 2-D leaf under an ``item_table`` key) sharded by rows over ``vocab``; optimiser state
mirrors the parameters (Adam's moments of the table are sharded like the table, the step count
replicated). XLA inserts the gradient all-reduce over ``data``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA, VOCAB = "data", "vocab"
TABLE_KEY = "item_table"
LOOKUP_CHOICES = ("auto", "xla", "shard_map")  # config.mesh.lookup (see distributed/lookup.py)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    data: int = 0
    vocab: int = 1
    coordinator_address: str = ""
    num_processes: int = 0
    process_id: int = 0
    enabled: bool = True
    lookup: str = "auto"


def check_lookup(lookup: str) -> str:
    """``lookup`` if it is one of LOOKUP_CHOICES, else a one-line ValueError."""
    if lookup not in LOOKUP_CHOICES:
        raise ValueError(f"config.mesh.lookup={lookup!r} is not one of "
                         f"{', '.join(map(repr, LOOKUP_CHOICES))}")
    return lookup


def mesh_config(cfg=None) -> MeshConfig:
    """``MeshConfig`` from ``config.mesh`` (ConfigDict / dict / MeshConfig / None)."""
    if cfg is None:
        return MeshConfig()
    if isinstance(cfg, MeshConfig):
        return cfg
    get = cfg.get if hasattr(cfg, "get") else lambda k, d=None: getattr(cfg, k, d)
    known = {f.name for f in dataclasses.fields(MeshConfig)}
    unknown = set(cfg.keys() if hasattr(cfg, "keys") else []) - known
    if unknown:
        raise ValueError(f"unknown config.mesh fields {sorted(unknown)}: use {sorted(known)}")
    lookup = check_lookup(str(get("lookup", "auto") or "auto"))
    return MeshConfig(data=int(get("data", 0) or 0), vocab=int(get("vocab", 1) or 1),
                      coordinator_address=str(get("coordinator_address", "") or ""),
                      num_processes=int(get("num_processes", 0) or 0),
                      process_id=int(get("process_id", 0) or 0),
                      enabled=bool(get("enabled", True)), lookup=lookup)


def initialize_multihost(cfg: MeshConfig) -> bool:
    """``jax.distributed.initialize`` when several processes are configured; True if it ran."""
    if cfg.num_processes <= 1:
        return False
    if not cfg.coordinator_address:
        raise ValueError("config.mesh.num_processes > 1 needs config.mesh.coordinator_address "
                         "(host:port of process 0)")
    if not 0 <= cfg.process_id < cfg.num_processes:
        raise ValueError(f"config.mesh.process_id={cfg.process_id} must be in "
                         f"[0, num_processes={cfg.num_processes})")
    jax.distributed.initialize(coordinator_address=cfg.coordinator_address,
                               num_processes=cfg.num_processes, process_id=cfg.process_id)
    return True


def make_mesh(cfg=None, devices=None) -> Mesh:
    """A ``(data, vocab)`` mesh over ``devices`` (default: every device of every process).

    Axis types are ``Auto`` so that jitted code is partitioned by XLA (GSPMD) and only the
    functions that ask for it (``shard_map``) see per-device shards.
    """
    cfg = mesh_config(cfg)
    if devices is None:
        initialize_multihost(cfg)
        devices = jax.devices()
    devices = list(devices)
    n = len(devices)
    if cfg.vocab < 1 or n % cfg.vocab:
        raise ValueError(f"config.mesh.vocab={cfg.vocab} must be a positive divisor of the "
                         f"{n} devices")
    data = cfg.data or n // cfg.vocab
    if data * cfg.vocab != n:
        raise ValueError(f"config.mesh data={data} x vocab={cfg.vocab} = {data * cfg.vocab} "
                         f"devices, but {n} are available: make the product equal {n} "
                         "(or set data=0 to use all devices)")
    grid = np.asarray(devices, dtype=object).reshape(data, cfg.vocab)
    axis_types = (jax.sharding.AxisType.Auto,) * 2
    return Mesh(grid, (DATA, VOCAB), axis_types=axis_types)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis over ``data``."""
    return NamedSharding(mesh, P(DATA))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def _is_table(path, leaf) -> bool:
    names = [getattr(k, "key", getattr(k, "name", None)) for k in path]
    return TABLE_KEY in names and getattr(leaf, "ndim", 0) == 2


def state_shardings(tree, mesh: Mesh):
    """NamedShardings for a params / optimiser-state tree: the item table's rows over ``vocab``."""
    table, rep = NamedSharding(mesh, P(VOCAB, None)), replicated(mesh)
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: table if _is_table(path, leaf) else rep, tree)


def shard_tree(tree, mesh: Mesh):
    """``tree`` placed on the mesh with ``state_shardings`` (table rows must divide over vocab)."""
    return jax.device_put(tree, state_shardings(tree, mesh))


def table_rows_multiple(mesh: Mesh) -> int:
    return mesh.shape[VOCAB]


def pad_item_table(tree, multiple: int):
    """Every item-table leaf of ``tree`` padded with zero rows to a multiple of ``multiple`` rows.

    Padded rows are never an input id, take no part in the vocabulary-parallel losses
    (excluded rows) and get zero gradients, so they stay zero under Adam. Pad to a multiple that
    every mesh you will restore on divides (e.g. 8 or 128) to keep checkpoints interchangeable.
    """
    if multiple < 1:
        raise ValueError(f"multiple={multiple} must be positive")

    def pad(path, leaf):
        if not _is_table(path, leaf) or leaf.shape[0] % multiple == 0:
            return leaf
        extra = -leaf.shape[0] % multiple
        return jnp.concatenate([leaf, jnp.zeros((extra, leaf.shape[1]), leaf.dtype)])

    return jax.tree_util.tree_map_with_path(pad, tree)


def unpad_item_table(tree, rows: int):
    """Inverse of ``pad_item_table``: item-table leaves cut back to ``rows`` rows."""
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: leaf[:rows] if _is_table(path, leaf) else leaf, tree)
