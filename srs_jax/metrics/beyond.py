"""Beyond-accuracy metrics: Coverage@K and Surprisal@K, as MemoryEfficientSRS defines them.

``top_items int[U, K]`` holds the recommended encoded ids (0 = empty slot, ignored); K is its
width. ``test_period`` is a ``Sequences`` (CSR) of the histories of all test-period users.

mode="reference" (the reference system's definitions):
  Coverage@K  = |(union_u top-K(u)) ∩ I_ref| / |I_ref|, I_ref = distinct items of ``test_period``.
  Surprisal@K = (1 / N) sum_{u scored} (1 / K) sum_{j <= K} w(pred_uj), N = users of
                ``test_period``, i.e. averaged over all test-period users, unscored ones counting 0.
mode="conventional":
  Coverage@K  = |union_u top-K(u)| / V.
  Surprisal@K = (1 / U) sum_{u scored} (1 / K) sum_{j <= K} w(pred_uj)  (mean over scored users).
Item weight (both modes): w(i) = log2(N / u_i) / log2(N), u_i = number of ``test_period`` users who
interacted with i; items absent from ``test_period`` weigh 1. (N = 1 makes every seen item 0.)
"""

from __future__ import annotations

import numpy as np

MODES = ("reference", "conventional")


def _check(top_items, mode):
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not supported: use one of {MODES}")
    top_items = np.asarray(top_items)
    if top_items.ndim != 2 or top_items.shape[1] < 1:
        raise ValueError(f"top_items must be int[U, K] with K >= 1, got shape {top_items.shape}")
    return top_items


def _row_item_pairs(test_period) -> tuple[np.ndarray, np.ndarray]:
    """(row index, item) of every interaction of the CSR ``test_period``."""
    offsets = np.asarray(test_period.offsets, np.int64)
    items = np.asarray(test_period.items, np.int64)
    rows = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    return rows, items[: offsets[-1]]


def coverage(top_items, *, test_period=None, n_items: int | None = None, mode: str = "reference") -> float:
    """Coverage@K (formulas in the module docstring)."""
    top_items = _check(top_items, mode)
    recommended = np.unique(top_items[top_items > 0])
    if mode == "conventional":
        if not n_items or n_items < 1:
            raise ValueError("mode='conventional' needs n_items (the catalog size V)")
        return float(len(recommended) / n_items)
    if test_period is None:
        raise ValueError("mode='reference' needs test_period (PreparedDataset.test_period)")
    _, items = _row_item_pairs(test_period)
    reference = np.unique(items)
    if len(reference) == 0:
        raise ValueError("test_period holds no interactions: coverage is undefined")
    return float(np.isin(recommended, reference, assume_unique=True).sum() / len(reference))


def item_weights(test_period, n_items: int) -> np.ndarray:
    """float64[V + 1] surprisal weight of each encoded id (index 0, padding, weighs 0)."""
    rows, items = _row_item_pairs(test_period)
    if np.any(items < 1) or np.any(items > n_items):
        raise ValueError(f"test_period items must be encoded ids in [1, {n_items}]")
    users = np.asarray(test_period.users, np.int64)
    n_users = len(np.unique(users))
    # Distinct (user, item) pairs: a user counts once per item however often they repeat it.
    pairs = np.unique(users[rows] * (n_items + 1) + items)
    u_i = np.bincount(pairs % (n_items + 1), minlength=n_items + 1).astype(np.float64)
    w = np.ones(n_items + 1, np.float64)
    seen = u_i > 0
    w[seen] = np.log2(n_users / u_i[seen]) / np.log2(n_users) if n_users > 1 else 0.0
    w[0] = 0.0
    return w


def surprisal(top_items, *, test_period, n_items: int, mode: str = "reference") -> float:
    """Surprisal@K (formulas in the module docstring)."""
    top_items = _check(top_items, mode)
    if test_period is None:
        raise ValueError("surprisal needs test_period (the histories that define item weights)")
    if np.any(top_items < 0) or np.any(top_items > n_items):
        raise ValueError(f"top_items must be encoded ids in [0, {n_items}]")
    w = item_weights(test_period, n_items)
    per_user = w[top_items].sum(axis=1) / top_items.shape[1]
    if mode == "conventional":
        return float(per_user.mean()) if len(per_user) else 0.0
    n_ref = len(np.unique(np.asarray(test_period.users)))
    if n_ref == 0:
        raise ValueError("test_period has no users: surprisal is undefined")
    return float(per_user.sum() / n_ref)
