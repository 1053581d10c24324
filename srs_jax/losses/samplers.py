"""Negative samplers on device (jax.random), over labels ``0..V-1``.

* ``uniform``: ``q_j = 1 / V``, ids from ``jax.random.randint`` (with replacement).
* ``popularity``: ``q_j = c_j / sum(c)`` with ``c`` the training counts. Drawn by inverse CDF: an
  integer ``u`` uniform in ``[0, sum(c))`` and ``searchsorted`` over the int32 cumulative counts,
  so the probabilities are exact and memory is O(V) (never an ``[N, n, V]`` categorical).
  Items with count 0 are never drawn. Counts must sum to less than 2^31.

``sharing``: ``"row"`` draws ``n`` negatives per row; ``"batch"`` one set of ``n`` for all rows.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from srs_jax.config.names import PLAIN_SHARINGS as SHARINGS
from srs_jax.config.names import SAMPLERS


def label_counts(item_counts, n_items: int) -> jax.Array:
    """Training counts over labels ``0..V-1`` from ``int[V + 1]`` (encoded ids, [0] = padding) or ``int[V]``."""
    if item_counts is None:
        raise ValueError("sampler='popularity' needs item_counts (PreparedDataset.item_counts)")
    if hasattr(item_counts, "log_q") and hasattr(item_counts, "alias"):
        raise ValueError("pass raw item_counts, not a PopularityTable, to the plain-JAX samplers")
    shape = np.shape(item_counts)
    if shape == (n_items + 1,):
        item_counts = item_counts[1:]
    elif shape != (n_items,):
        raise ValueError(f"item_counts has shape {shape}; expected ({n_items + 1},) over encoded ids "
                         f"or ({n_items},) over labels")
    try:  # concrete counts are checked; traced ones (a jit argument) cannot be
        counts = np.asarray(item_counts)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        counts = None
    if counts is not None:
        if np.any(counts < 0) or counts.sum() <= 0 or counts.sum() >= 2**31:
            raise ValueError(f"item_counts must be non-negative with 0 < sum < 2^31, got sum {counts.sum()}")
    return jnp.asarray(item_counts).astype(jnp.int32)


def host_label_counts(item_counts, n_items: int) -> np.ndarray:
    """``label_counts`` on the host: checked ``int32[V]`` numpy counts (built once with a loss)."""
    if item_counts is None:
        raise ValueError("sampler='popularity' needs item_counts (PreparedDataset.item_counts)")
    counts = np.asarray(item_counts)
    if counts.shape == (n_items + 1,):
        counts = counts[1:]
    elif counts.shape != (n_items,):
        raise ValueError(f"item_counts has shape {counts.shape}; expected ({n_items + 1},) over "
                         f"encoded ids or ({n_items},) over labels")
    if np.any(counts < 0) or counts.sum() <= 0 or counts.sum() >= 2**31:
        raise ValueError(f"item_counts must be non-negative with 0 < sum < 2^31, got sum {counts.sum()}")
    return counts.astype(np.int32)


def sample_negatives(key: jax.Array, n_rows: int, num_negatives: int, n_items: int, *,
                     sampler: str = "uniform", item_counts=None, sharing: str = "row") -> jax.Array:
    """int32[n_rows, num_negatives] labels in [0, V) (rows identical when ``sharing='batch'``)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"loss.sampler={sampler!r} is not supported: use one of {SAMPLERS}")
    if sharing not in SHARINGS:
        raise ValueError(f"loss.sharing={sharing!r} is not supported by the plain-JAX sampled losses: "
                         f"use one of {SHARINGS} (or loss.type='cce_neg' for 'block')")
    shape = (n_rows if sharing == "row" else 1, num_negatives)
    if sampler == "uniform":
        ids = jax.random.randint(key, shape, 0, n_items, dtype=jnp.int32)
    else:
        cdf = jnp.cumsum(label_counts(item_counts, n_items))
        u = jax.random.randint(key, shape, 0, cdf[-1], dtype=jnp.int32)
        ids = jnp.searchsorted(cdf, u, side="right").astype(jnp.int32)
    return jnp.broadcast_to(ids, (n_rows, num_negatives))


def log_q(ids: jax.Array, n_items: int, *, sampler: str, item_counts=None) -> jax.Array:
    """float32 log of the sampling probability of each id (same shape as ``ids``)."""
    if sampler == "uniform":
        return jnp.full(ids.shape, -np.log(n_items), jnp.float32)
    counts = label_counts(item_counts, n_items).astype(jnp.float32)
    return jnp.log(counts[ids]) - jnp.log(counts.sum())
