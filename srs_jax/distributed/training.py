"""Sharded training: place the state on the mesh and jit ``steps.train_step`` with its shardings.

The step is the single-device ``srs_jax.training.steps.train_step`` unchanged: XLA partitions the
model (batch over ``data``; the item-table lookup from a ``vocab``-sharded table becomes a masked
local gather plus an all-reduce, its gradient a local scatter plus an all-reduce over ``data``)
and reduces the gradients. Only the ``cce`` / ``cce_neg`` losses are routed, through
``loss_hook``, to ``pallas_kernels.vocab_parallel`` (``shard_map``), because Pallas calls cannot be
partitioned by XLA and the table must not be gathered.
"""

from __future__ import annotations

import functools
import math

import jax
import numpy as np
from jax.sharding import Mesh

from srs_jax.distributed import loss as loss_lib
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


def table_rows(state) -> int:
    rows = [leaf.shape[0] for path, leaf in jax.tree_util.tree_leaves_with_path(state.params)
            if mesh_lib._is_table(path, leaf)]
    if len(rows) != 1:
        raise ValueError(f"expected exactly one item table parameter, found {len(rows)}")
    return rows[0]


def shard_batch(batch: dict, mesh: Mesh) -> dict:
    """Host batch (numpy dict) -> device arrays split by rows over ``data``."""
    n_data = mesh.shape[mesh_lib.DATA]
    for name, x in batch.items():
        if np.shape(x)[0] % n_data:
            raise ValueError(f"batch[{name!r}] has {np.shape(x)[0]} rows, not divisible by the "
                             f"{n_data} data shards: make train.batch_size a multiple of {n_data}")
    return jax.device_put(batch, mesh_lib.batch_sharding(mesh))


def make_sharded_train_step(model_config, loss_config, optimizer, mesh: Mesh, state, opt_state, *,
                            n_items: int, item_counts=None, interpret: bool = False):
    """``train_step(graphdef, state, opt_state, batch, key, item_counts=None)`` jitted on ``mesh``.

    ``state`` / ``opt_state`` as returned by ``place_state`` (their shardings are kept across
    steps; both are donated). The returned function raises on first use if the step did not go
    through ``loss_hook`` while it had to (the trainer patch is missing).
    """
    plan = loss_lib.make_loss_plan(mesh, loss_config, table_rows(state), n_items,
                                   item_counts=item_counts, interpret=interpret)
    state_sh = jax.tree.map(lambda x: x.sharding, state)
    opt_sh = jax.tree.map(lambda x: x.sharding, opt_state)
    rep = mesh_lib.replicated(mesh)
    fn = functools.partial(steps_lib.train_step, model_config=model_config,
                           loss_config=loss_config, optimizer=optimizer)

    def traced(graphdef, state, opt_state, batch, key, item_counts=None):
        with loss_lib.use_plan(plan):
            return fn(graphdef, state, opt_state, batch, key, item_counts)

    jitted = jax.jit(traced, static_argnums=0, donate_argnums=(1, 2),
                     out_shardings=(state_sh, opt_sh, rep))
    needs_hook = plan.vocab > 1 or loss_lib.option(loss_config, "type") in ("cce", "cce_neg")

    def step(graphdef, state, opt_state, batch, key, item_counts=None):
        out = jitted(graphdef, state, opt_state, batch, key, item_counts)
        if needs_hook and plan.calls == 0:
            raise RuntimeError(
                "the training step did not call srs_jax.distributed.loss_hook: apply the hook in "
                "srs_jax/training/steps.py (see docs/distributed.md) to train on a mesh with "
                f"vocab > 1 or a Pallas loss (loss.type={loss_lib.option(loss_config, 'type')!r})")
        return out

    step.plan = plan
    return step
