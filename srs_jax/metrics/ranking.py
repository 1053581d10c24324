"""Ranking metrics with one ground-truth item per user, as MemoryEfficientSRS computes them.

With ``rho`` the 1-based rank of the target in the user's list (``inf`` if absent) and
``hit = 1[rho <= K]``, per user:

* ``hitrate@K = recall@K = hit``
* ``ndcg@K = hit / log2(rho + 1)``          (IDCG = 1 for one relevant item)
* ``mrr@K = map@K = hit / rho``
* ``precision@K = hit / K``

Each is averaged over all users (a user whose list misses the target counts 0).
"""

from __future__ import annotations

import numpy as np

METRICS = ("ndcg", "hitrate", "mrr", "recall", "precision", "map")


def target_ranks(top_items: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """float64[U]: 1-based position of ``targets[u]`` in ``top_items[u]``, ``inf`` if absent."""
    hits = top_items == targets[:, None]
    first = np.argmax(hits, axis=1).astype(np.float64) + 1.0
    return np.where(hits.any(axis=1), first, np.inf)


def ranking_metrics(top_items, targets, ks=(10,)) -> dict[str, float]:
    """``{"ndcg@K", "hitrate@K", "mrr@K", "recall@K", "precision@K", "map@K"}`` for K in ``ks``.

    Args:
      top_items: int[U, >= max(ks)] recommended encoded ids, best first (0 = empty slot).
      targets: int[U] ground-truth encoded ids (1..V).
    """
    top_items = np.asarray(top_items)
    targets = np.asarray(targets)
    if top_items.ndim != 2 or targets.shape != top_items.shape[:1]:
        raise ValueError(f"top_items [U, K] and targets [U] expected, got {top_items.shape} and {targets.shape}")
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1 or max(ks) > top_items.shape[1]:
        raise ValueError(f"ks={ks} must be positive and at most the list length {top_items.shape[1]}")
    if np.any(targets < 1):
        raise ValueError("targets must be encoded item ids >= 1 (0 is padding)")
    rho = target_ranks(top_items, targets)
    out = {}
    for k in ks:
        hit = rho <= k
        rr = np.where(hit, 1.0 / rho, 0.0)
        out[f"ndcg@{k}"] = float(np.mean(np.where(hit, 1.0 / np.log2(rho + 1.0), 0.0))) if len(rho) else 0.0
        out[f"hitrate@{k}"] = float(np.mean(hit)) if len(rho) else 0.0
        out[f"recall@{k}"] = out[f"hitrate@{k}"]
        out[f"mrr@{k}"] = float(np.mean(rr)) if len(rho) else 0.0
        out[f"map@{k}"] = out[f"mrr@{k}"]
        out[f"precision@{k}"] = out[f"hitrate@{k}"] / k
    return out
