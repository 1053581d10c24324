"""The training state: an NNX model split into a static ``graphdef`` and a ``TrainState`` of arrays.

``params`` are the ``nnx.Param`` leaves (fp32, updated by optax); ``rest`` is everything else
(e.g. dropout RNG streams, re-seeded from the step key on every call, so that the whole step is a
pure function of ``(state, opt_state, batch, key)``).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
from flax import nnx
from jax.sharding import Mesh

from srs_jax import models as models_lib
from srs_jax import parallel
from srs_jax.config.specs import ModelSpec


class TrainState(NamedTuple):
    params: Any  # nnx.State of nnx.Param leaves (fp32)
    rest: Any  # nnx.State of all other variables (RNG streams, ...); never donated


def split_model(model: nnx.Module):
    """Returns ``(graphdef, TrainState)`` for ``model``."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return graphdef, TrainState(params, rest)


def merge_model(graphdef, state: TrainState) -> nnx.Module:
    return nnx.merge(graphdef, state.params, state.rest)


def _rngs(seed: int) -> nnx.Rngs:
    return nnx.Rngs(params=seed, dropout=seed + 1)


def build_state(spec: ModelSpec, n_items: int, *, seed: int, lookup: Callable = models_lib.gather):
    """Model ``(graphdef, TrainState)`` initialised from ``seed``."""
    return split_model(models_lib.build_model(spec, n_items, rngs=_rngs(seed), lookup=lookup))


def init_sharded_state(spec: ModelSpec, n_items: int, mesh: Mesh, optimizer, *, seed: int,
                       multiple: int | None = None):
    """``(graphdef, state, opt_state)`` initialised directly in their shardings.

    The same values as ``build_state`` + ``optimizer.init`` on one device (then padded), but no
    device ever holds the whole item table: the init runs under ``jit`` with sharded outputs, so
    each device draws only its rows (partitionable threefry). Needed when the table with its Adam
    moments does not fit on one device (100M items x 256 x 4 B x 3 = 307 GB).
    """
    multiple = parallel.pad_multiple(mesh.shape[parallel.VOCAB]) if multiple is None else int(multiple)

    def init():
        state = build_state(spec, n_items, seed=seed)[1]
        return state._replace(params=parallel.pad_item_table(state.params, multiple))

    graphdef = split_model(nnx.eval_shape(
        lambda: models_lib.build_model(spec, n_items, rngs=_rngs(seed))))[0]
    abstract = jax.eval_shape(init)
    state_sh = abstract._replace(params=parallel.state_shardings(abstract.params, mesh),
                                 rest=jax.tree.map(lambda _: parallel.replicated(mesh), abstract.rest))
    state = jax.jit(init, out_shardings=state_sh)()
    opt_abstract = jax.eval_shape(optimizer.init, state.params)
    opt_state = jax.jit(optimizer.init, out_shardings=parallel.state_shardings(opt_abstract, mesh))(
        state.params)
    return graphdef, state, opt_state
