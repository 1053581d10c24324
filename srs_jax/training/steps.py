"""Pure, jittable training and evaluation steps; ``make_train_step`` serves one device and a mesh.

The NNX model is split once (``state.split_model``) into a static ``graphdef`` and a ``TrainState``
of arrays. The loss is an object built once (``srs_jax.losses.build_loss``) and handed to the
step; on a device mesh it was built with the mesh, so ``cce`` / ``cce_neg`` run
vocabulary-parallel, and the step is jitted with the state's shardings.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax import lax
from jax.sharding import Mesh

from srs_jax import models as models_lib
from srs_jax import parallel
from srs_jax.config.specs import ModelSpec, TrainSpec
from srs_jax.losses import Loss
from srs_jax.training import flat_state
from srs_jax.training.state import TrainState, merge_model, split_model


def _rng_stream_tags(model: nnx.Module) -> tuple[str, ...]:
    tags = {s.key.tag for _, s in nnx.graph.iter_graph(model) if isinstance(s, nnx.RngStream)}
    return tuple(sorted(tags))


def _reseed(model: nnx.Module, key: jax.Array) -> None:
    # Every RNG stream (dropout, ...) gets a key derived from the step key, so randomness is a
    # function of (seed, step) only: this is what makes resume bit-exact.
    tags = _rng_stream_tags(model)
    if tags:
        nnx.reseed(model, **{t: jax.random.fold_in(key, i) for i, t in enumerate(tags)})


def learning_rate_schedule(spec: TrainSpec, total_steps: int) -> optax.Schedule:
    """``constant`` (after an optional linear warmup) or ``cosine`` decay to 0 at ``total_steps``."""
    lr, warmup = spec.lr, spec.warmup_steps
    if spec.schedule == "constant":
        if warmup <= 0:
            return optax.constant_schedule(lr)
        return optax.join_schedules(
            [optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup])
    # "cosine" (the spec admits nothing else)
    return optax.warmup_cosine_decay_schedule(
        0.0, lr, max(warmup, 0), max(int(total_steps), warmup + 1), end_value=0.0)


def make_optimizer(spec: TrainSpec, total_steps: int) -> optax.GradientTransformation:
    """Adam(lr, b1, b2) with the configured schedule and optional global-norm clipping."""
    adam = optax.adam(learning_rate_schedule(spec, total_steps), b1=spec.b1, b2=spec.b2,
                      eps=spec.eps)
    clip = spec.grad_clip
    return optax.chain(optax.clip_by_global_norm(clip), adam) if clip > 0 else adam


def _flat_targets(target_ids):
    """``target_ids int32[B, L]`` (0 = no target) -> ``labels int32[N]`` in ``[0, V)``, ``where bool[N]``."""
    flat = target_ids.reshape(-1)
    where = flat > 0
    return jnp.where(where, flat - 1, 0).astype(jnp.int32), where


def train_step(graphdef, state: TrainState, opt_state, batch: dict, key: jax.Array, *,
               model_spec: ModelSpec, loss: Loss, optimizer):
    """One optimisation step.

    Args:
      graphdef: static NNX graph definition (from ``split_model``).
      state: ``TrainState`` (params fp32).
      opt_state: optax state of ``optimizer`` over ``state.params``.
      batch: ``{"inputs": int32[B, L], "targets": int32[B, L]}`` (0 = padding / no target).
      key: step key (``fold_in(seed key, global step)``): dropout, masking and negatives.
      model_spec: the model's spec (its module turns the batch into inputs and targets).
      loss: the loss object (``srs_jax.losses.build_loss``).

    Returns ``(state, opt_state, metrics)`` with fp32 scalars ``loss``, ``grad_norm``,
    ``n_targets`` and ``finite``. A step whose loss or gradient is not finite leaves ``state`` and
    ``opt_state`` unchanged (the host stops the run when it sees ``finite == 0``).
    """
    mod = models_lib.model_module(model_spec.name)
    k_inputs, k_dropout, k_loss = jax.random.split(key, 3)
    input_ids, target_ids = mod.training_inputs(batch, k_inputs, model_spec)
    labels, where = _flat_targets(target_ids)

    # Re-seed outside the differentiated function: NNX forbids mutating outer-trace variables.
    seeded = merge_model(graphdef, state)
    _reseed(seeded, k_dropout)
    rest = nnx.split(seeded, nnx.Param, ...)[2]

    def loss_fn(params):
        # Fresh Variable objects in this trace (merge would otherwise reuse the outer ones).
        model = nnx.merge(graphdef, params, jax.tree.map(lambda x: x, rest))
        hidden = model(input_ids, deterministic=False)
        hidden = hidden.reshape(-1, hidden.shape[-1])
        # A vocabulary-parallel loss reads the whole (sharded) item table, as it is laid out.
        classifier = model.item_table.embedding[...] if loss.reads_table else model.output_embeddings()
        return loss(hidden, classifier, labels, where, key=k_loss)

    value, grads = jax.value_and_grad(loss_fn)(state.params)
    value = value.astype(jnp.float32)
    grad_norm = optax.global_norm(grads).astype(jnp.float32)
    updates, new_opt_state = optimizer.update(grads, opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)
    finite = jnp.isfinite(value) & jnp.isfinite(grad_norm)
    keep = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
    new_params = jax.tree.map(keep, new_params, state.params)
    new_opt_state = jax.tree.map(keep, new_opt_state, opt_state)
    metrics = {"loss": value, "grad_norm": grad_norm,
               "n_targets": where.sum().astype(jnp.float32), "finite": finite.astype(jnp.float32)}
    return state._replace(params=new_params), new_opt_state, metrics


def make_train_step(model_spec: ModelSpec, loss: Loss, optimizer, *, mesh: Mesh | None = None,
                    state: TrainState | None = None, opt_state=None):
    """``train_step`` bound to its spec, loss and optimizer, jitted once (graphdef static, state
    and optimiser state donated). The returned function takes ``(graphdef, state, opt_state,
    batch, key)``.

    One device (``mesh=None``): the jitted step itself (``flat_train_step`` wraps it). Both
    kinds have ``.lower(...)`` with the step's arguments.
    A mesh: ``state`` / ``opt_state`` as placed by ``srs_jax.parallel.place_state`` (their
    shardings are kept across steps); the step splits each host batch over ``data``
    (``parallel.shard_batch``) and XLA partitions the rest. Build ``loss`` with the same mesh.
    """
    def step(graphdef, state, opt_state, batch, key):
        return train_step(graphdef, state, opt_state, batch, key, model_spec=model_spec, loss=loss,
                          optimizer=optimizer)

    if mesh is None:
        return jax.jit(step, static_argnums=0, donate_argnums=(1, 2))
    if state is None or opt_state is None:
        raise ValueError("make_train_step on a mesh needs the placed state and opt_state "
                         "(srs_jax.parallel.place_state) for their shardings")
    shardings = (jax.tree.map(lambda x: x.sharding, state),
                 jax.tree.map(lambda x: x.sharding, opt_state), parallel.replicated(mesh))
    jitted = jax.jit(step, static_argnums=0, donate_argnums=(1, 2), out_shardings=shardings)

    def sharded_step(graphdef, state, opt_state, batch, key):
        return jitted(graphdef, state, opt_state, parallel.shard_batch(batch, mesh), key)

    # Like a jitted function's: compile for given arguments (memory analysis, timing).
    sharded_step.lower = lambda graphdef, state, opt_state, batch, key: jitted.lower(  # noqa: E731
        graphdef, state, opt_state, parallel.shard_batch(batch, mesh), key)
    return sharded_step


METRICS = ("loss", "grad_norm", "n_targets", "finite")  # the rows of flat_train_step's metrics


@functools.lru_cache(maxsize=8)
def flat_train_step(train_step, graphdef, spec: flat_state.PackSpec):
    """``train_step`` (as from ``make_train_step``) over the state packed by
    ``flat_state.pack(state, opt_state, spec)``, jitted: ``(buffers, block, index int32,
    base_key_data uint32[...], global_step int32) -> (buffers, fp32[4] metrics in METRICS
    order)``, buffers donated. The batch is ``block[name][index]`` of a block of stacked batches
    (``batches.stacked_blocks``). The step key is ``fold_in(base_key, global_step)``, as the
    trainer's, with ``base_key = wrap_key_data(base_key_data)`` (default PRNG implementation).

    Why: the host time of a jit call grows with its pytree and buffer count. Passing the NNX
    state itself (~100 arrays for SASRec with Adam, flattened in Python through every
    ``nnx.Variable``, PRNG keys outside jax's C++ path) costs ~3 ms per step on the H100
    machine, which capped small models at ~300 steps/s (docs/training.md). For the same reason
    the key is folded inside the jit (an eager ``fold_in`` is a dispatch of its own), the metrics
    come back as one array, and the inputs of several steps travel as one block. Cached on its
    arguments so that every epoch reuses one compiled step.
    """
    def step(buffers, block, index, base_key_data, global_step):
        batch = {name: lax.dynamic_index_in_dim(x, index, 0, keepdims=False)
                 for name, x in block.items()}
        state, opt_state = flat_state.unpack(buffers, spec)
        key = jax.random.fold_in(jax.random.wrap_key_data(base_key_data), global_step)
        state, opt_state, metrics = train_step(graphdef, state, opt_state, batch, key)
        return (flat_state.pack(state, opt_state, spec),
                jnp.stack([metrics[k].astype(jnp.float32) for k in METRICS]))

    return jax.jit(step, donate_argnums=0)


def encode_step(graphdef, state: TrainState, history, *, model_spec: ModelSpec):
    """``history int32[B, L]`` (left-padded) -> fp32 query vectors ``[B, H]`` read at position ``L - 1``."""
    mod = models_lib.model_module(model_spec.name)
    model = merge_model(graphdef, state)
    hidden = model(mod.eval_inputs(history, model_spec), deterministic=True)
    return hidden[:, -1, :].astype(jnp.float32)


def make_encode_step(model_spec: ModelSpec):
    return jax.jit(functools.partial(encode_step, model_spec=model_spec), static_argnums=0)


@functools.partial(jax.jit, static_argnums=0)
def output_embeddings(graphdef, state: TrainState):
    """fp32 ``[V, H]`` output item embeddings (rows of items 1..V)."""
    return merge_model(graphdef, state).output_embeddings().astype(jnp.float32)


__all__ = ["METRICS", "TrainState", "encode_step", "flat_train_step", "learning_rate_schedule",
           "make_encode_step", "make_optimizer", "make_train_step", "merge_model",
           "output_embeddings", "split_model", "train_step"]
