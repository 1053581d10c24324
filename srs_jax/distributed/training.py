"""Sharded training: place the state on the mesh and jit ``steps.train_step`` with its shardings.

The step is the single-device ``srs_jax.training.steps.train_step`` unchanged: XLA partitions the
model (batch over ``data``; the item-table lookup from a ``vocab``-sharded table becomes a masked
local gather plus an all-reduce, its gradient a local scatter plus an all-reduce over ``data``,
unless ``config.mesh.lookup`` routes it to the ``shard_map`` version, ``lookup_hook``) and
reduces the gradients. Only the ``cce`` / ``cce_neg`` losses are routed, through
``loss_hook``, to ``pallas_kernels.vocab_parallel`` (``shard_map``), because Pallas calls cannot be
partitioned by XLA and the table must not be gathered.
"""

from __future__ import annotations

import functools
import math

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from srs_jax.distributed import lookup as lookup_lib
from srs_jax.distributed import loss as loss_lib
from srs_jax import models as models_lib
from srs_jax.distributed import mesh as mesh_lib
from srs_jax.training import steps as steps_lib


def default_pad_multiple(mesh: Mesh) -> int:
    """Table rows are padded to a multiple of lcm(vocab, 8) when vocab > 1 (so checkpoints move
    between meshes with vocab in {1, 2, 4, 8}), and not padded for pure data parallelism."""
    v = mesh.shape[mesh_lib.VOCAB]
    return 1 if v == 1 else math.lcm(v, 8)


def place_state(state, opt_state, mesh: Mesh, *, pad_multiple: int | None = None):
    """``(state, opt_state)`` with the item table (and its Adam moments) padded and sharded.

    ``opt_state`` must have been created from the *unpadded* params (e.g. a fresh
    ``optimizer.init`` or a single-device checkpoint); its table-shaped leaves are padded alike.
    """
    multiple = default_pad_multiple(mesh) if pad_multiple is None else int(pad_multiple)
    if multiple % mesh.shape[mesh_lib.VOCAB]:
        raise ValueError(f"pad_multiple={multiple} must be divisible by the vocab axis "
                         f"({mesh.shape[mesh_lib.VOCAB]})")
    params = mesh_lib.pad_item_table(state.params, multiple)
    opt_state = mesh_lib.pad_item_table(opt_state, multiple)
    state = state._replace(params=mesh_lib.shard_tree(params, mesh),
                           rest=jax.device_put(state.rest, mesh_lib.replicated(mesh)))
    return state, mesh_lib.shard_tree(opt_state, mesh)


def init_sharded_state(model_config, n_items: int, mesh: Mesh, optimizer, *, seed: int,
                       pad_multiple: int | None = None):
    """``(graphdef, state, opt_state)`` initialised directly in their shardings.

    The same values as ``build_model`` + ``split_model`` + ``optimizer.init`` on one device (then
    padded), but no device ever holds the whole item table: the init runs under ``jit`` with
    sharded outputs, so each device draws only its rows (partitionable threefry). Needed when the
    table with its Adam moments does not fit on one device (100M items x 256 x 4 B x 3 = 307 GB).
    """
    multiple = default_pad_multiple(mesh) if pad_multiple is None else int(pad_multiple)

    def build():
        model = models_lib.build_model(model_config, n_items,
                                       rngs=nnx.Rngs(params=seed, dropout=seed + 1))
        return steps_lib.split_model(model)

    def init():
        state = build()[1]
        return state._replace(params=mesh_lib.pad_item_table(state.params, multiple))

    graphdef = steps_lib.split_model(nnx.eval_shape(lambda: models_lib.build_model(
        model_config, n_items, rngs=nnx.Rngs(params=seed, dropout=seed + 1))))[0]
    abstract = jax.eval_shape(init)
    state_sh = abstract._replace(params=mesh_lib.state_shardings(abstract.params, mesh),
                                 rest=jax.tree.map(lambda _: mesh_lib.replicated(mesh),
                                                   abstract.rest))
    state = jax.jit(init, out_shardings=state_sh)()
    opt_abstract = jax.eval_shape(optimizer.init, state.params)
    opt_state = jax.jit(optimizer.init, out_shardings=mesh_lib.state_shardings(opt_abstract, mesh))(
        state.params)
    return graphdef, state, opt_state


def padded_like_training(config, tree):
    """``tree`` (e.g. a fresh single-device checkpoint target) with its item table padded as a
    run with ``config.mesh`` saved it, so such a checkpoint restores on one device; cut the
    restored table back with ``unpad_item_table(params, rows)``. No-op without a mesh."""
    mesh_cfg = config.get("mesh") if hasattr(config, "get") else getattr(config, "mesh", None)
    if mesh_cfg is None:
        return tree
    cfg = mesh_lib.mesh_config(mesh_cfg)
    if not cfg.enabled or cfg.vocab == 1:
        return tree
    return mesh_lib.pad_item_table(tree, math.lcm(cfg.vocab, 8))


def table_rows(state) -> int:
    rows = [leaf.shape[0] for path, leaf in jax.tree_util.tree_leaves_with_path(state.params)
            if mesh_lib._is_table(path, leaf)]
    if len(rows) != 1:
        raise ValueError(f"expected exactly one item table parameter, found {len(rows)}")
    return rows[0]


def shard_batch(batch: dict, mesh: Mesh) -> dict:
    """Host batch (dict of arrays, the *global* batch) -> device arrays split by rows over ``data``.

    With several processes every process passes the same global batch (``BatchIterator`` is a
    function of ``(seed, epoch)``) and contributes the rows of its own devices.
    """
    n_data = mesh.shape[mesh_lib.DATA]
    sharding = mesh_lib.batch_sharding(mesh)
    for name, x in batch.items():
        if np.shape(x)[0] % n_data:
            raise ValueError(f"batch[{name!r}] has {np.shape(x)[0]} rows, not divisible by the "
                             f"{n_data} data shards: make train.batch_size a multiple of {n_data}")
    if jax.process_count() == 1:
        return jax.device_put(batch, sharding)
    return {name: jax.make_array_from_callback(np.shape(x), sharding,
                                               lambda idx, x=x: np.asarray(x)[idx])
            for name, x in batch.items()}


def make_sharded_train_step(model_config, loss_config, optimizer, mesh: Mesh, state, opt_state, *,
                            n_items: int, item_counts=None, interpret: bool = False,
                            lookup: str = "auto"):
    """``train_step(graphdef, state, opt_state, batch, key)`` jitted on ``mesh``.

    Mirrors ``steps.make_train_step``: ``item_counts`` (host ``int[V + 1]``, popularity sampler)
    is bound as a concrete array, and also turned into the per-shard sampler tables of the
    vocabulary-parallel CCE-. ``state`` / ``opt_state`` as returned by ``place_state`` (their
    shardings are kept across steps; both are donated); ``batch`` must be split over ``data``
    (``shard_batch``). ``lookup``: ``config.mesh.lookup`` ("auto" | "xla" | "shard_map"), how the
    model reads its inputs from the sharded table (``srs_jax.distributed.lookup``). Raises on
    first use if the step did not go through ``loss_hook`` / ``classifier_hook`` while it had to
    (the trainer patch is missing), or not through ``lookup_hook`` when "shard_map" was asked for.
    """
    plan = loss_lib.make_loss_plan(mesh, loss_config, table_rows(state), n_items,
                                   item_counts=item_counts, interpret=interpret,
                                   lookup=lookup_lib.resolve_lookup(lookup))
    counts = None if item_counts is None else np.asarray(item_counts)
    state_sh = jax.tree.map(lambda x: x.sharding, state)
    opt_sh = jax.tree.map(lambda x: x.sharding, opt_state)
    rep = mesh_lib.replicated(mesh)

    def traced(graphdef, state, opt_state, batch, key):
        with loss_lib.use_plan(plan):
            return steps_lib.train_step(graphdef, state, opt_state, batch, key, counts,
                                        model_config=model_config, loss_config=loss_config,
                                        optimizer=optimizer)

    jitted = jax.jit(traced, static_argnums=0, donate_argnums=(1, 2),
                     out_shardings=(state_sh, opt_sh, rep))
    needs_hook = plan.vocab > 1 or loss_lib.option(loss_config, "type") in ("cce", "cce_neg")

    def step(graphdef, state, opt_state, batch, key):
        out = jitted(graphdef, state, opt_state, batch, key)
        if needs_hook and plan.calls == 0:
            raise RuntimeError(
                "the training step did not call srs_jax.distributed.loss_hook: apply the hook in "
                "srs_jax/training/steps.py (see docs/distributed.md) to train on a mesh with "
                f"vocab > 1 or a Pallas loss (loss.type={loss_lib.option(loss_config, 'type')!r})")
        if plan.lookup == "shard_map" and plan.vocab > 1 and plan.lookup_calls == 0:
            raise RuntimeError(f"mesh.lookup='shard_map' but model {model_config.name!r} did not "
                               "call srs_jax.distributed.lookup.lookup_hook")
        return out

    step.plan = plan
    step.jitted = jitted
    return step


def setup_training(config, state, opt_state, optimizer, n_items: int, *, item_counts=None):
    """The trainer's hook: ``(state, opt_state, train_step)`` for ``config.mesh``, or the inputs
    and ``None`` when ``config`` has no (enabled) ``mesh`` entry or the mesh has one device (the
    single-device path stays as it is).

    Call it right after ``optimizer.init`` and before restoring a checkpoint, so the restore
    target has the padded, sharded shapes the checkpoints are saved in. The returned step
    accepts host or single-device batches and shards them over ``data``.
    """
    mesh_cfg = config.get("mesh") if hasattr(config, "get") else getattr(config, "mesh", None)
    if mesh_cfg is None or not mesh_lib.mesh_config(mesh_cfg).enabled:
        return state, opt_state, None
    mesh = mesh_lib.make_mesh(mesh_cfg)
    if mesh.size == 1:  # one device (the default config on a one-GPU or CPU machine): plain step
        return state, opt_state, None
    batch = int(config.train.batch_size)
    if batch % mesh.shape[mesh_lib.DATA]:
        raise ValueError(f"train.batch_size={batch} must be a multiple of the {mesh.shape[mesh_lib.DATA]} "
                         "data shards of config.mesh")
    state, opt_state = place_state(state, opt_state, mesh)
    step = make_sharded_train_step(config.model, config.loss, optimizer, mesh, state, opt_state,
                                   n_items=n_items, item_counts=item_counts,
                                   lookup=mesh_lib.mesh_config(mesh_cfg).lookup)
    def sharded_step(graphdef, state, opt_state, batch, key):
        return step(graphdef, state, opt_state, shard_batch(batch, mesh), key)

    sharded_step.plan = step.plan
    sharded_step.mesh = mesh
    return state, opt_state, sharded_step


def sharded_table(state):
    """``(table [R, H], mesh)`` if the item table is sharded over a ``vocab`` axis > 1, else None."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(state.params):
        if mesh_lib._is_table(path, leaf):
            sh = getattr(leaf, "sharding", None)
            mesh = getattr(sh, "mesh", None)
            if mesh is not None and mesh.shape.get(mesh_lib.VOCAB, 1) > 1:
                return leaf, mesh
    return None


def top_k_hook(graphdef, state, query, k: int, *, exclude=None, user_chunk: int = 4096,
               item_chunk: int = 65536):
    """Evaluation's hook: top-``k`` encoded ids ``int32[U, k]`` from a vocab-sharded table (per-shard
    top-K merged; the table is never gathered), or ``None`` when the table is not sharded."""
    found = sharded_table(state)
    if found is None:
        return None
    from srs_jax.distributed.topk import top_k_items_sharded

    table, mesh = found
    n_items = int(steps_lib.merge_model(graphdef, state).n_items)
    return top_k_items_sharded(query, table, k, mesh=mesh, n_items=n_items, exclude=exclude,
                               user_chunk=user_chunk, item_chunk=item_chunk)
