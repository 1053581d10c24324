"""Evaluation metrics: chunked full-catalog top-K, ranking metrics, Coverage and Surprisal.

* ``top_k_items(query [U, H], item_embeddings [V, H], k, *, exclude, user_chunk, item_chunk)``
  -> int32[U, k] encoded ids (1..V), seen items removed, no score block above
  ``user_chunk x item_chunk`` (``topk.py``).
* ``ranking_metrics(top_items, targets, ks)`` -> ``ndcg@K, hitrate@K, mrr@K, recall@K,
  precision@K, map@K`` (``ranking.py``, formulas there).
* ``coverage(top_items, *, test_period, n_items, mode)``, ``surprisal(...)`` with the reference or
  the conventional definitions (``beyond.py``, formulas there).
* ``popularity_top_k(item_counts, k, *, n_users, exclude)``: the most-popular baseline.
"""

from srs_jax.metrics.beyond import coverage, item_weights, surprisal
from srs_jax.metrics.popularity import popularity_top_k
from srs_jax.metrics.ranking import METRICS, ranking_metrics, target_ranks
from srs_jax.metrics.topk import chunked_top_k, top_k_items

__all__ = [
    "METRICS",
    "chunked_top_k",
    "coverage",
    "item_weights",
    "popularity_top_k",
    "ranking_metrics",
    "surprisal",
    "target_ranks",
    "top_k_items",
]
