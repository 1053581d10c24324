"""Full-ranking top-K against an item table sharded by rows over ``vocab``: per-shard top-K, merged.

Each ``vocab`` shard runs the single-device chunked search (``srs_jax.metrics.topk.chunked_top_k``)
on its own rows, with the user's seen items and the table's non-item rows (padding row 0, a mask
row, alignment padding) masked; the ``K x k`` candidates per user are all-gathered over ``vocab``
(``k`` scores and ids per shard, never table rows) and merged with one ``lax.top_k``. Users are
split over ``data`` (so over the processes of a multi-process run); the ``U x k`` results are
gathered to every process. Ties keep the lower item id first, as on one device.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from pallas_kernels import shard_map
from srs_jax.parallel.mesh import DATA, VOCAB
from srs_jax.metrics import topk as topk_lib


def _non_item_candidates(r: int, n_shards: int, col_start: int, num_classes: int) -> np.ndarray:
    """Local row positions that are a non-item row on some shard (static)."""
    tail = r * n_shards - col_start - num_classes
    return np.unique(np.r_[np.arange(min(col_start, r)), np.arange(max(r - tail, 0), r)]).astype(np.int32)


def _shard_top_k(query, table, exclude, *, k, item_chunk, col_start, num_classes, n_shards):
    r = table.shape[0]
    offset = lax.axis_index(VOCAB) * r - col_start  # label of local row 0
    local_excl = jnp.where(exclude >= 0, exclude - offset, -1)
    local_excl = jnp.where((local_excl >= 0) & (local_excl < r), local_excl, -1)
    cand = _non_item_candidates(r, n_shards, col_start, num_classes)
    if cand.size:  # non-item rows of this shard join the exclusions
        labels = offset + jnp.asarray(cand)
        non_item = (labels < 0) | (labels >= num_classes)
        extra = jnp.where(non_item, jnp.asarray(cand), -1)
        local_excl = jnp.concatenate(
            [local_excl, jnp.broadcast_to(extra, (query.shape[0], cand.size))], axis=1)
    kk = min(k, r)
    scores, idx = topk_lib.chunked_top_k(query, table, kk, item_chunk=item_chunk,
                                         exclude=local_excl)
    glob = (idx + offset).astype(jnp.int32)
    if kk < k:
        scores = jnp.pad(scores, ((0, 0), (0, k - kk)), constant_values=-jnp.inf)
        glob = jnp.pad(glob, ((0, 0), (0, k - kk)))
    # k scores and ids per shard cross the wire, never table rows; shard order = id order.
    all_s = lax.all_gather(scores, VOCAB, axis=1, tiled=True)
    all_i = lax.all_gather(glob, VOCAB, axis=1, tiled=True)
    top_s, pos = lax.top_k(all_s, k)
    return top_s, jnp.take_along_axis(all_i, pos, axis=1)


@functools.lru_cache(maxsize=None)
def _sharded_fn(mesh: Mesh, k: int, item_chunk: int, col_start: int, num_classes: int):
    fn = shard_map(functools.partial(_shard_top_k, k=k, item_chunk=item_chunk,
                                     col_start=col_start, num_classes=num_classes,
                                     n_shards=mesh.shape[VOCAB]),
                   mesh=mesh, in_specs=(P(DATA, None), P(VOCAB, None), P(DATA, None)),
                   out_specs=(P(DATA, None), P(DATA, None)))
    # Results replicated: every process reads all users' top-K (U x k, small) on the host.
    rep = NamedSharding(mesh, P())
    return jax.jit(fn, out_shardings=(rep, rep))


def sharded_top_k(query, table, k: int, *, mesh: Mesh, exclude=None, col_start: int = 1,
                  num_classes: int | None = None, item_chunk: int = 65536):
    """Top-``k`` classes per query against ``table[col_start : col_start + V]``, table sharded.

    Args:
      query: [U, H] (U divisible by the ``data`` size); table: [R, H], R divisible by ``vocab``.
      exclude: optional int32[U, E] labels (item id - 1) to skip per user, -1 = none.
    Returns:
      (scores float32[U, k] descending, labels int32[U, k]); skipped classes score -inf.
    """
    num_classes = table.shape[0] - col_start if num_classes is None else int(num_classes)
    if not 1 <= k <= num_classes:
        raise ValueError(f"k={k} must be in [1, V={num_classes}]")
    if table.shape[0] % mesh.shape[VOCAB] or query.shape[0] % mesh.shape[DATA]:
        raise ValueError(f"table rows {table.shape[0]} must divide over vocab={mesh.shape[VOCAB]} "
                         f"and users {query.shape[0]} over data={mesh.shape[DATA]}")
    if exclude is None:
        exclude = np.full((query.shape[0], 1), -1, np.int32)
    if not isinstance(exclude, jax.Array):  # host data, the same in every process
        exclude = jax.device_put(np.asarray(exclude, np.int32), NamedSharding(mesh, P(DATA, None)))
    fn = _sharded_fn(mesh, int(k), int(min(item_chunk, table.shape[0] // mesh.shape[VOCAB])),
                     int(col_start), num_classes)
    return fn(query, table, exclude.astype(jnp.int32))


def top_k_items_sharded(query, table, k: int, *, mesh: Mesh, n_items: int, exclude=None,
                        col_start: int = 1, user_chunk: int = 4096,
                        item_chunk: int = 65536) -> np.ndarray:
    """``srs_jax.metrics.top_k_items`` on a mesh: users split over ``data``, the table (rows
    ``col_start .. col_start + V - 1`` = items 1..V) split over ``vocab``.

    ``query`` [U, H] must be the same in every process (e.g. replicated). Returns encoded ids
    ``int32[U, k]`` (1..V, seen items removed; 0 where fewer than ``k`` unseen items exist), in
    every process. ``exclude`` is a ``Sequences`` of each user's seen items.
    """
    query = np.asarray(query)
    n_users = query.shape[0]
    n_data = mesh.shape[DATA]
    user_chunk = max(n_data, -(-min(int(user_chunk), max(n_users, 1)) // n_data) * n_data)
    out = np.zeros((n_users, k), np.int32)
    users = NamedSharding(mesh, P(DATA, None))
    for start in range(0, n_users, user_chunk):
        stop = min(start + user_chunk, n_users)
        q = np.zeros((user_chunk, query.shape[1]), query.dtype)
        q[: stop - start] = query[start:stop]
        excl = None
        if exclude is not None:
            excl = jax.device_put(topk_lib.exclusion_block(
                np.asarray(exclude.offsets), np.asarray(exclude.items), start, stop, user_chunk),
                users)
        scores, labels = sharded_top_k(jax.device_put(q, users), table, k, mesh=mesh, exclude=excl,
                                       col_start=col_start, num_classes=n_items,
                                       item_chunk=item_chunk)
        scores = np.asarray(scores)[: stop - start]
        labels = np.asarray(labels)[: stop - start]
        out[start:stop] = np.where(np.isneginf(scores), 0, labels + 1)
    return out
