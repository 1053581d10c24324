"""Full-catalog top-K in chunks: no score matrix larger than ``user_chunk x item_chunk`` exists.

Items are scanned in ``item_chunk`` blocks (``lax.fori_loop``); each block's top-K is merged into a
running top-K with ``lax.top_k``. The last block is read at ``V - item_chunk`` (overlapping the
previous one) and its already-seen columns are masked, so the catalog is never padded or copied.
Ties keep the lower item id first.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def chunked_top_k(query: jax.Array, items: jax.Array, k: int, *, item_chunk: int,
                  exclude: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Top-``k`` rows of ``items`` by dot product with each query row (pure, jittable).

    Args:
      query: [Q, H]; items: [V, H] (cast to ``query.dtype``; float32 accumulation).
      k: number of results, ``k <= V``.
      item_chunk: catalog rows scored at a time.
      exclude: optional int32[Q, E] item *indices* (0-based rows of ``items``) to skip per query;
        entries < 0 are ignored.

    Returns:
      (scores float32[Q, k] descending, indices int32[Q, k]); excluded items score -inf and only
      appear when fewer than ``k`` items remain.
    """
    n_items = items.shape[0]
    if not 1 <= k <= n_items:
        raise ValueError(f"k={k} must be in [1, V={n_items}]")
    chunk = min(int(item_chunk), n_items)
    n_chunks = -(-n_items // chunk)
    rows = jnp.arange(query.shape[0])[:, None]

    def body(i, carry):
        best_s, best_i = carry
        nominal = i * chunk
        start = jnp.minimum(nominal, n_items - chunk)
        # Cast per block: a catalog-sized converted copy would defeat the chunking.
        block = jax.lax.dynamic_slice_in_dim(items, start, chunk, axis=0).astype(query.dtype)
        s = jnp.einsum("qh,vh->qv", query, block, preferred_element_type=jnp.float32)
        ids = start + jnp.arange(chunk, dtype=jnp.int32)
        s = jnp.where(ids[None, :] >= nominal, s, -jnp.inf)  # overlap with the previous block
        if exclude is not None:
            local = exclude - start
            ok = (exclude >= 0) & (local >= 0) & (local < chunk)
            s = s.at[rows, jnp.where(ok, local, chunk)].set(-jnp.inf, mode="drop")
        cs, ci = jax.lax.top_k(s, min(k, chunk))
        all_s = jnp.concatenate([best_s, cs], axis=1)  # running best first: ties keep lower ids
        all_i = jnp.concatenate([best_i, ci.astype(jnp.int32) + start], axis=1)
        top_s, pos = jax.lax.top_k(all_s, k)
        return top_s, jnp.take_along_axis(all_i, pos, axis=1)

    init = (jnp.full((query.shape[0], k), -jnp.inf, jnp.float32), jnp.zeros((query.shape[0], k), jnp.int32))
    return jax.lax.fori_loop(0, n_chunks, body, init)


_chunked_top_k_jit = jax.jit(chunked_top_k, static_argnames=("k", "item_chunk"))


def exclusion_block(offsets: np.ndarray, items: np.ndarray, start: int, stop: int, n_rows: int) -> np.ndarray:
    """int32[n_rows, W] item indices (encoded id - 1) of CSR rows ``start:stop``, padded with -1.

    W is rounded up to a power of two so that few distinct shapes (compilations) occur.
    """
    lens = np.diff(offsets[start:stop + 1]).astype(np.int64)
    width = 1 << int(max(int(lens.max(initial=0)), 1) - 1).bit_length()
    out = np.full((n_rows, width), -1, np.int32)
    row = np.repeat(np.arange(stop - start), lens)
    col = np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)
    out[row, col] = items[offsets[start]:offsets[stop]].astype(np.int64) - 1
    return out


def top_k_items(query, item_embeddings, k: int, *, exclude=None, user_chunk: int = 4096,
                item_chunk: int = 65536) -> np.ndarray:
    """Top-``k`` encoded item ids ``int32[U, k]`` (1..V) per user, best first, seen items removed.

    Args:
      query: [U, H] user vectors (the model output at the last position).
      item_embeddings: [V, H], row ``v - 1`` scores item ``v`` (``model.output_embeddings()``).
      k: list length (<= V).
      exclude: ``Sequences`` (CSR ``offsets int64[U+1]``, ``items int32[total]``, encoded ids) of
        items never to recommend to user ``u`` (the user's whole input history), or None.
      user_chunk, item_chunk: the largest score block is ``user_chunk x item_chunk`` float32.

    Slots left when a user has fewer than ``k`` unseen items hold 0 (the padding id).
    """
    query = jnp.asarray(query)
    item_embeddings = jnp.asarray(item_embeddings)
    if query.ndim != 2 or item_embeddings.ndim != 2 or query.shape[1] != item_embeddings.shape[1]:
        raise ValueError(f"query [U, H] and item_embeddings [V, H] expected, got {query.shape} and "
                         f"{item_embeddings.shape}")
    n_users, n_items = query.shape[0], item_embeddings.shape[0]
    if not 1 <= k <= n_items:
        raise ValueError(f"k={k} must be between 1 and the catalog size {n_items}: lower eval.ks")
    if user_chunk < 1 or item_chunk < 1:
        raise ValueError(f"user_chunk={user_chunk} and item_chunk={item_chunk} must be positive")
    if exclude is not None:
        offsets, seen = np.asarray(exclude.offsets), np.asarray(exclude.items)
        if offsets.shape != (n_users + 1,):
            raise ValueError(f"exclude has {offsets.shape[0] - 1} rows but query has {n_users} users: "
                             "pass the input histories of the same users, in the same order")
    user_chunk = min(int(user_chunk), max(n_users, 1))
    out = np.zeros((n_users, k), np.int32)
    pending = []  # device results; read back at the end so host work overlaps device work
    for start in range(0, n_users, user_chunk):
        stop = min(start + user_chunk, n_users)
        q = query[start:stop]
        if stop - start < user_chunk:  # keep one compiled shape
            q = jnp.concatenate([q, jnp.zeros((user_chunk - (stop - start), q.shape[1]), q.dtype)])
        excl = None
        if exclude is not None:
            excl = jnp.asarray(exclusion_block(offsets, seen, start, stop, user_chunk))
        scores, idx = _chunked_top_k_jit(q, item_embeddings, k, item_chunk=int(item_chunk), exclude=excl)
        pending.append((start, stop, jnp.where(jnp.isneginf(scores), 0, idx + 1)))
    for start, stop, ids in pending:
        out[start:stop] = np.asarray(ids)[: stop - start]
    return out
