"""Input embedding lookup from an item table sharded by rows over ``vocab``.

Two ways to compute ``table[ids]`` inside the sharded training step (``config.mesh.lookup``):

* ``"xla"``: the model's own gather, partitioned by XLA's SPMD partitioner (a masked local gather
  plus an all-reduce over ``vocab``; the gradient a local scatter-add plus an all-reduce over
  ``data``).
* ``"shard_map"``: ``sharded_lookup``, the same algorithm written out by hand as a ``custom_vjp``
  whose forward and backward are each one ``shard_map``, so the collectives are exactly one
  ``psum`` of ``[B / data, L, H]`` over ``vocab`` forward and one ``psum`` of the local table shard
  over ``data`` backward, whatever XLA's partitioner would choose.
* ``"auto"``: ``AUTO_LOOKUP`` (the faster of the two on GPU, see docs/distributed.md).

The models call ``lookup_hook(table, ids)`` and fall back to their own gather when it returns
``None`` (no active plan, ``vocab == 1`` or ``lookup == "xla"``), so a single device runs the
unchanged model.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import Mesh, PartitionSpec as P

from pallas_kernels.vocab_parallel import shard_map
from srs_jax.distributed.loss import current_plan
from srs_jax.distributed.mesh import DATA, VOCAB, check_lookup

# The choice "auto" makes. Measured on 2 H200 (vocab 2, Zvuk shape, docs/distributed.md): the
# SASRec CCE step takes 314.9 ms with "xla" and 313.7 with "shard_map", i.e. the same; XLA's
# gather needs no extra code path.
AUTO_LOOKUP = "xla"


def resolve_lookup(lookup: str) -> str:
    """``"auto" | "xla" | "shard_map"`` -> ``"xla" | "shard_map"`` (one-line error otherwise)."""
    return AUTO_LOOKUP if check_lookup(lookup) == "auto" else lookup


def _owned(ids, rows: int):
    """Local row of each id on this ``vocab`` shard (rows ``[k r, (k + 1) r)``) and ownership."""
    local = ids - lax.axis_index(VOCAB) * rows
    return local, (local >= 0) & (local < rows)


def _gather_shard(table, ids):
    """table [r, H] (this shard's rows), ids int[b, ...] -> [b, ..., H], replicated over vocab."""
    local, owned = _owned(ids, table.shape[0])
    rows = jnp.take(table, jnp.where(owned, local, 0), axis=0)
    # Exactly one shard owns each id and the others add zeros, so the sum is exact.
    return lax.psum(jnp.where(owned[..., None], rows, jnp.zeros((), table.dtype)), VOCAB)


def _scatter_shard(ids, g, *, rows: int):
    """ids int[b, ...], g [b, ..., H] -> d_table [r, H]: this shard's rows, summed over data."""
    local, owned = _owned(ids, rows)
    idx = jnp.where(owned, local, rows).reshape(-1)  # not owned -> out of range, dropped
    d = jnp.zeros((rows, g.shape[-1]), g.dtype).at[idx].add(g.reshape(-1, g.shape[-1]),
                                                            mode="drop")
    return lax.psum(d, DATA)


@functools.lru_cache(maxsize=None)
def _lookup_fn(mesh: Mesh, rows: int):
    shards = mesh.shape[VOCAB]
    fwd_map = shard_map(_gather_shard, mesh=mesh, in_specs=(P(VOCAB, None), P(DATA)),
                        out_specs=P(DATA))
    bwd_map = shard_map(functools.partial(_scatter_shard, rows=rows // shards), mesh=mesh,
                        in_specs=(P(DATA), P(DATA)), out_specs=P(VOCAB, None))

    # Replication checks are off in these shard_maps, so JAX's autodiff of psum would not give
    # the transpose we need; the custom_vjp states both directions explicitly.
    @jax.custom_vjp
    def lookup(table, ids):
        return fwd_map(table, ids)

    def fwd(table, ids):
        return fwd_map(table, ids), ids

    def bwd(ids, g):
        return bwd_map(ids, g), None  # ids are integers: no cotangent

    lookup.defvjp(fwd, bwd)
    return lookup


def sharded_lookup(table: jax.Array, ids: jax.Array, mesh: Mesh) -> jax.Array:
    """``table[ids]`` with explicit collectives; differentiable in ``table`` (exact gradient).

    Args:
      table: [R, H] (any float dtype), rows sharded over ``vocab`` (R divisible by its size).
      ids: int[B, ...] rows to read, in ``[0, R)`` (out-of-range ids give zeros, unlike
        ``table[ids]``, which wraps / clamps), leading axis sharded over ``data``.
      mesh: the ``(data, vocab)`` mesh.
    Returns:
      ``[B, ..., H]`` in ``table.dtype``, leading axis sharded over ``data``, equal to
      ``table[ids]`` bit for bit. Gradient: scatter-add of the cotangent into the owning shard,
      summed over ``data`` (float sums in another order than XLA's, so equal up to rounding).
    """
    if table.ndim != 2 or ids.ndim < 1 or not jnp.issubdtype(ids.dtype, jnp.integer):
        raise ValueError(f"sharded_lookup needs table [R, H] and integer ids [B, ...]; got "
                         f"table {table.shape}, ids {ids.shape} {ids.dtype}")
    if table.shape[0] % mesh.shape[VOCAB] or ids.shape[0] % mesh.shape[DATA]:
        raise ValueError(f"table rows {table.shape[0]} and batch {ids.shape[0]} must divide by "
                         f"vocab={mesh.shape[VOCAB]} and data={mesh.shape[DATA]}")
    return _lookup_fn(mesh, table.shape[0])(table, ids)


def lookup_hook(table: jax.Array, ids: jax.Array):
    """The models' patch point: ``sharded_lookup(table, ids)`` when the active plan asks for it
    (``lookup == "shard_map"`` on a mesh with ``vocab > 1``), else ``None`` (the model then does
    its own gather, which XLA partitions)."""
    plan = current_plan()
    if plan is None or plan.vocab == 1 or plan.lookup != "shard_map":
        return None
    plan.lookup_calls += 1
    return sharded_lookup(table, ids, plan.mesh)
