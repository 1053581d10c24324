"""The most-popular baseline: every user gets the most frequent training items they have not seen."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from srs_jax.metrics.topk import top_k_items


def popularity_top_k(item_counts, k: int, *, n_users: int, exclude=None, user_chunk: int = 4096,
                     item_chunk: int = 65536) -> np.ndarray:
    """int32[n_users, k] encoded ids by descending training count (ties: lower id first).

    Args:
      item_counts: int[V + 1] training counts by encoded id ([0] = padding, ignored).
      exclude: optional ``Sequences`` of each user's seen items (removed, as for the model).
    """
    counts = np.asarray(item_counts)
    if counts.ndim != 1 or counts.size < 2:
        raise ValueError(f"item_counts must be int[V + 1] over encoded ids, got shape {counts.shape}")
    # Score = count as a 1-D "embedding" against a query of ones: the same chunked, filtered top-K.
    items = jnp.asarray(counts[1:, None].astype(np.float32))
    query = jnp.ones((n_users, 1), jnp.float32)
    return top_k_items(query, items, k, exclude=exclude, user_chunk=user_chunk, item_chunk=item_chunk)
