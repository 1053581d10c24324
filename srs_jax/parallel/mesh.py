"""The device mesh (``data`` x ``vocab``) and the shardings of batches, parameters and optimiser state.

``MeshSpec`` (``config.mesh``): ``data`` devices on the ``data`` axis (0: all devices not used by
``vocab``), ``vocab`` devices on the ``vocab`` axis (1: pure data parallelism), ``enabled``
(False: one device). With several processes (``srs_jax.parallel.multihost``) the mesh spans the
devices of all of them, and each process feeds only its rows of a batch (``process_rows``).

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
from srs_jax.parallel.multihost import initialize_multihost

DATA, VOCAB = "data", "vocab"
TABLE_KEY = "item_table"


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
    return put_global(tree, state_shardings(tree, mesh))


def put_global(tree, shardings):
    """``jax.device_put(tree, shardings)``; with several processes (each holding the same values)
    through a jitted identity, since ``device_put`` cannot place a single-device array or a PRNG
    key on devices of other processes."""
    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)
    host = jax.tree.map(lambda x: x if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
                        else np.asarray(x), tree)
    return jax.jit(lambda t: t, out_shardings=shardings)(host)


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
    rest = jax.tree.map(lambda _: replicated(mesh), state.rest)
    state = state._replace(params=shard_tree(params, mesh), rest=put_global(state.rest, rest))
    return state, shard_tree(opt_state, mesh)


def process_rows(mesh: Mesh, rows: int) -> slice:
    """The rows of a global batch of ``rows`` rows (split over ``data``) that this process's
    devices hold: a contiguous block, the whole batch for one process."""
    index = batch_sharding(mesh).addressable_devices_indices_map((rows,))
    spans = sorted({idx[0].indices(rows)[:2] for idx in index.values()})
    lo, hi = spans[0][0], spans[-1][1]
    if sum(b - a for a, b in spans) != hi - lo:
        raise ValueError(f"process {jax.process_index()} holds rows {spans} of the batch, not one "
                         "block: order the mesh devices by process (make_mesh does)")
    return slice(lo, hi)


def shard_batch(batch: dict, mesh: Mesh, global_rows: int | None = None) -> dict:
    """Host batch (dict of arrays) -> global device arrays split by rows over ``data``.

    One process: ``batch`` is the global batch. Several: ``batch`` holds this process's rows
    (``process_rows(mesh, global_rows)``) of a global batch of ``global_rows`` rows, assembled with
    ``jax.make_array_from_process_local_data``; arrays already placed on ``mesh`` pass through.
    """
    n_data = mesh.shape[DATA]
    sharding = batch_sharding(mesh)
    if jax.process_count() > 1:
        if all(isinstance(x, jax.Array) and x.sharding == sharding for x in batch.values()):
            return batch
        if global_rows is None:
            raise ValueError("shard_batch with several processes needs global_rows (each process "
                             "passes only its rows: process_rows)")
    for name, x in batch.items():
        rows = np.shape(x)[0] if global_rows is None else int(global_rows)
        if rows % n_data:
            raise ValueError(f"batch[{name!r}] has {rows} rows, not divisible by the "
                             f"{n_data} data shards: make train.batch_size a multiple of {n_data}")
    if jax.process_count() == 1:
        return jax.device_put(batch, sharding)
    return {name: jax.make_array_from_process_local_data(
                sharding, np.asarray(x), (int(global_rows),) + np.shape(x)[1:])
            for name, x in batch.items()}


def sharded_table(params):
    """``(table [R, H], mesh)`` if the item table is sharded over a ``vocab`` axis > 1, else None."""
    found = table_mesh(params)
    return found if found is not None and found[1].shape.get(VOCAB, 1) > 1 else None


def table_mesh(params):
    """``(table [R, H], mesh)`` if the item table lives on a mesh of several devices, else None."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if is_item_table(path, leaf):
            mesh = getattr(getattr(leaf, "sharding", None), "mesh", None)
            if mesh is not None and mesh.size > 1:
                return leaf, mesh
    return None


def run_mesh(spec: MeshSpec) -> Mesh | None:
    """The mesh a run trains on, or None for one device (``enabled`` False, or a mesh of one
    device: the default config on a one-GPU or CPU machine takes the single-device path)."""
    if not spec.enabled:
        return None
    mesh = make_mesh(spec)
    return mesh if mesh.size > 1 else None
