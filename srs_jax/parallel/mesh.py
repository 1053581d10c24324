"""The device mesh (``data`` x ``vocab``) and the shardings of batches, parameters and optimiser state.

``MeshSpec`` (``config.mesh``): ``data`` devices on the ``data`` axis (0: all devices not used by
``vocab``), ``vocab`` devices on the ``vocab`` axis (1: pure data parallelism), several hosts
through ``coordinator_address`` / ``num_processes`` / ``process_id`` (passed to
``jax.distributed.initialize``), ``enabled`` (False: one device).

Shardings: batches by rows over ``data``; every parameter replicated, except the item embedding
table (any 2-D leaf under an ``item_table`` key) sharded by rows over ``vocab``; optimiser state
mirrors the parameters (Adam's moments of the table are sharded like the table, the step count
replicated). XLA inserts the gradient all-reduce over ``data``. When ``vocab > 1`` the table rows
are padded to a multiple of lcm(vocab, 8), so checkpoints move between meshes with vocab in
{1, 2, 4, 8}.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from srs_jax.config.specs import MeshSpec

DATA, VOCAB = "data", "vocab"
TABLE_KEY = "item_table"
def initialize_multihost(cfg: MeshSpec) -> bool:
    """``jax.distributed.initialize`` when several processes are configured; True if it ran."""
    if cfg.num_processes <= 1:
        return False
    jax.distributed.initialize(coordinator_address=cfg.coordinator_address,
                               num_processes=cfg.num_processes, process_id=cfg.process_id)
    return True


def make_mesh(cfg: MeshSpec | None = None, devices=None) -> Mesh:
    """A ``(data, vocab)`` mesh over ``devices`` (default: every device of every process).

    Axis types are ``Auto`` so that jitted code is partitioned by XLA (GSPMD) and only the
    functions that ask for it (``shard_map``) see per-device shards.
    """
    cfg = MeshSpec() if cfg is None else cfg
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


def is_item_table(path, leaf) -> bool:
    """Whether the leaf at ``path`` is the item embedding table (or one of its Adam moments)."""
    names = [getattr(k, "key", getattr(k, "name", None)) for k in path]
    return TABLE_KEY in names and getattr(leaf, "ndim", 0) == 2


def state_shardings(tree, mesh: Mesh):
    """NamedShardings for a params / optimiser-state tree: the item table's rows over ``vocab``."""
    table, rep = NamedSharding(mesh, P(VOCAB, None)), replicated(mesh)
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: table if is_item_table(path, leaf) else rep, tree)


def shard_tree(tree, mesh: Mesh):
    """``tree`` placed on the mesh with ``state_shardings`` (table rows must divide over vocab)."""
    return jax.device_put(tree, state_shardings(tree, mesh))


def pad_item_table(tree, multiple: int):
    """Every item-table leaf of ``tree`` padded with zero rows to a multiple of ``multiple`` rows.

    Padded rows are never an input id, take no part in the vocabulary-parallel losses
    (excluded rows) and get zero gradients, so they stay zero under Adam. Pad to a multiple that
    every mesh you will restore on divides (e.g. 8 or 128) to keep checkpoints interchangeable.
    """
    if multiple < 1:
        raise ValueError(f"multiple={multiple} must be positive")

    def pad(path, leaf):
        if not is_item_table(path, leaf) or leaf.shape[0] % multiple == 0:
            return leaf
        extra = -leaf.shape[0] % multiple
        return jnp.concatenate([leaf, jnp.zeros((extra, leaf.shape[1]), leaf.dtype)])

    return jax.tree_util.tree_map_with_path(pad, tree)


def unpad_item_table(tree, rows: int):
    """Inverse of ``pad_item_table``: item-table leaves cut back to ``rows`` rows."""
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: leaf[:rows] if is_item_table(path, leaf) else leaf, tree)


def pad_multiple(vocab: int) -> int:
    """Rows of the item table are padded to a multiple of lcm(vocab, 8) when ``vocab > 1`` (so
    checkpoints move between meshes with vocab in {1, 2, 4, 8}), not at all otherwise."""
    return 1 if vocab == 1 else math.lcm(vocab, 8)


def padded_like_training(mesh_spec: MeshSpec, tree):
    """``tree`` (e.g. a fresh single-device checkpoint target) with its item table padded as a
    run with ``mesh_spec`` saved it, so such a checkpoint restores on one device; cut the
    restored table back with ``unpad_item_table(params, rows)``. No-op without a vocab axis."""
    if not mesh_spec.enabled or mesh_spec.vocab == 1:
        return tree
    return pad_item_table(tree, pad_multiple(mesh_spec.vocab))


def table_rows(params) -> int:
    """Rows of the (possibly padded) item table in a params tree."""
    rows = [leaf.shape[0] for path, leaf in jax.tree_util.tree_leaves_with_path(params)
            if is_item_table(path, leaf)]
    if len(rows) != 1:
        raise ValueError(f"expected exactly one item table parameter, found {len(rows)}")
    return rows[0]


def place_state(state, opt_state, mesh: Mesh, *, multiple: int | None = None):
    """``(state, opt_state)`` (a ``TrainState`` of ``params`` and ``rest``, and its optimiser
    state) with the item table (and its Adam moments) padded and sharded, the rest replicated.

    ``opt_state`` must have been created from the *unpadded* params (e.g. a fresh
    ``optimizer.init`` or a single-device checkpoint); its table-shaped leaves are padded alike.
    """
    multiple = pad_multiple(mesh.shape[VOCAB]) if multiple is None else int(multiple)
    if multiple % mesh.shape[VOCAB]:
        raise ValueError(f"multiple={multiple} must be divisible by the vocab axis "
                         f"({mesh.shape[VOCAB]})")
    params = pad_item_table(state.params, multiple)
    opt_state = pad_item_table(opt_state, multiple)
    state = state._replace(params=shard_tree(params, mesh),
                           rest=jax.device_put(state.rest, replicated(mesh)))
    return state, shard_tree(opt_state, mesh)


def shard_batch(batch: dict, mesh: Mesh) -> dict:
    """Host batch (dict of arrays, the *global* batch) -> device arrays split by rows over ``data``.

    With several processes every process passes the same global batch (``BatchIterator`` is a
    function of ``(seed, epoch)``) and contributes the rows of its own devices.
    """
    n_data = mesh.shape[DATA]
    sharding = batch_sharding(mesh)
    for name, x in batch.items():
        if np.shape(x)[0] % n_data:
            raise ValueError(f"batch[{name!r}] has {np.shape(x)[0]} rows, not divisible by the "
                             f"{n_data} data shards: make train.batch_size a multiple of {n_data}")
    if jax.process_count() == 1:
        return jax.device_put(batch, sharding)
    return {name: jax.make_array_from_callback(np.shape(x), sharding,
                                               lambda idx, x=x: np.asarray(x)[idx])
            for name, x in batch.items()}


def sharded_table(params):
    """``(table [R, H], mesh)`` if the item table is sharded over a ``vocab`` axis > 1, else None."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if is_item_table(path, leaf):
            mesh = getattr(getattr(leaf, "sharding", None), "mesh", None)
            if mesh is not None and mesh.shape.get(VOCAB, 1) > 1:
                return leaf, mesh
    return None


def run_mesh(spec: MeshSpec) -> Mesh | None:
    """The mesh a run trains on, or None for one device (``enabled`` False, or a mesh of one
    device: the default config on a one-GPU or CPU machine takes the single-device path)."""
    if not spec.enabled:
        return None
    mesh = make_mesh(spec)
    return mesh if mesh.size > 1 else None
