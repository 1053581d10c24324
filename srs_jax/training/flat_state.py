"""The training state as a few plain arrays: what crosses the jit boundary at every step.

Every array a jitted call takes or returns costs host time at dispatch (the runtime tracks each
buffer), and pytrees of ``nnx.Variable`` nodes or PRNG key arrays are flattened in Python. For a
small model the step itself takes under a millisecond on a GPU (0.7 ms for SASRec on the Games
set, H100), so this bookkeeping decides the step rate (docs/training.md, "Host overhead on the
GPU"). ``pack`` turns ``(state, opt_state)`` into:

* each leaf of at least ``PACK_MIN_SIZE`` elements (embedding tables and their Adam moments) as
  its own array, PRNG keys as their raw ``uint32`` data;
* all smaller leaves (layer weights, biases, norms, step counters, RNG keys) concatenated into
  one 1-D buffer per dtype, so that copying them (inside the jit, every step) costs little.

``unpack`` is the inverse, inside a jit (slices of the buffers) or on the host. Both are exact.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

PACK_MIN_SIZE = 1 << 20  # leaves with fewer elements share one buffer per dtype


class Slot(NamedTuple):
    """Where one leaf lives: ``buffer`` (index into the packed list), ``offset`` into it (-1: the
    leaf is the whole buffer), its ``shape``, and the PRNG implementation of a key leaf."""
    buffer: int
    offset: int
    shape: tuple
    key_impl: str | None


class PackSpec(NamedTuple):
    """How ``pack`` laid out ``(state, opt_state)``; hashable (a static jit argument)."""
    treedef: Any
    slots: tuple  # one Slot per leaf, in tree order
    n_buffers: int


def _raw(x):
    """A leaf as a plain array: PRNG keys as their raw data."""
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(x), str(jax.random.key_impl(x))
    return x, None


def _leaf(x, slot: Slot):
    """Inverse of ``_raw``: raw key data re-wrapped as the slot's PRNG keys."""
    return jax.random.wrap_key_data(x, impl=slot.key_impl) if slot.key_impl else x


def spec_of(state, opt_state) -> PackSpec:
    """The layout ``pack`` uses for trees shaped like ``(state, opt_state)``."""
    leaves, treedef = jax.tree.flatten((state, opt_state))
    raws = [_raw(x) for x in leaves]
    big = [i for i, (x, _) in enumerate(raws) if np.prod(x.shape, dtype=np.int64) >= PACK_MIN_SIZE]
    groups: dict[str, int] = {}  # dtype -> buffer index of its packed buffer
    fill: dict[str, int] = {}
    slots: list[Slot | None] = [None] * len(leaves)
    for n, i in enumerate(big):
        slots[i] = Slot(n, -1, tuple(raws[i][0].shape), raws[i][1])
    for i, (x, impl) in enumerate(raws):
        if slots[i] is not None:
            continue
        dt = jnp.dtype(x.dtype).name
        if dt not in groups:
            groups[dt], fill[dt] = len(big) + len(groups), 0
        slots[i] = Slot(groups[dt], fill[dt], tuple(x.shape), impl)
        fill[dt] += int(np.prod(x.shape, dtype=np.int64))
    return PackSpec(treedef, tuple(slots), len(big) + len(groups))


def _n_big(spec: PackSpec) -> int:
    return sum(slot.offset < 0 for slot in spec.slots)


@functools.partial(jax.jit, static_argnums=0)
def _pack_small(spec: PackSpec, small: list) -> list:
    """The small leaves (tree order) concatenated into the per-dtype buffers. Jitted: one call on
    the host (``pack`` at an epoch's start), inlined inside the training step."""
    groups: dict[int, list] = {}
    for x, slot in zip(small, (s for s in spec.slots if s.offset >= 0)):
        groups.setdefault(slot.buffer, []).append(jnp.ravel(_raw(x)[0]))
    return [jnp.concatenate(groups[b]) for b in sorted(groups)]


@functools.partial(jax.jit, static_argnums=0)
def _unpack_small(spec: PackSpec, packed: list) -> list:
    """Inverse of ``_pack_small``: the small leaves in tree order (PRNG keys re-wrapped)."""
    n_big, out = _n_big(spec), []
    for slot in spec.slots:
        if slot.offset < 0:
            continue
        size = int(np.prod(slot.shape, dtype=np.int64))
        x = jax.lax.slice(packed[slot.buffer - n_big], (slot.offset,), (slot.offset + size,))
        out.append(_leaf(x.reshape(slot.shape), slot))
    return out


def pack(state, opt_state, spec: PackSpec) -> list:
    """``(state, opt_state)`` as ``spec.n_buffers`` arrays: the big leaves as they are (no copy),
    then the packed buffers. Jittable; on the host it is one jitted call for the small leaves."""
    leaves = jax.tree.leaves((state, opt_state))
    big = [_raw(x)[0] for x, slot in zip(leaves, spec.slots) if slot.offset < 0]
    small = [x for x, slot in zip(leaves, spec.slots) if slot.offset >= 0]
    return big + list(_pack_small(spec, small))


def unpack(buffers, spec: PackSpec):
    """Inverse of ``pack``: ``(state, opt_state)``."""
    n_big = _n_big(spec)
    small = iter(_unpack_small(spec, list(buffers[n_big:])))
    leaves = [next(small) if slot.offset >= 0 else _leaf(buffers[slot.buffer], slot)
              for slot in spec.slots]
    return jax.tree.unflatten(spec.treedef, leaves)
