"""Ranking metrics, Coverage and Surprisal against hand-computed values and a generic reference."""

from dataclasses import dataclass
import math

import numpy as np
import pytest

from srs_jax.metrics import coverage, item_weights, ranking_metrics, surprisal


@dataclass(frozen=True)
class CSR:
    offsets: np.ndarray
    items: np.ndarray
    users: np.ndarray


def test_hand_computed_ranking():
    top = np.array([[5, 3, 9, 1, 2], [4, 6, 7, 8, 2], [1, 2, 3, 4, 5], [0, 0, 0, 0, 0]])
    targets = np.array([3, 2, 10, 1])  # ranks 2, 5, absent, absent
    m = ranking_metrics(top, targets, ks=(1, 3, 5))
    assert set(m) == {f"{name}@{k}" for name in ("ndcg", "hitrate", "mrr", "recall", "precision", "map")
                      for k in (1, 3, 5)}
    assert all(m[f"{name}@1"] == 0.0 for name in ("ndcg", "hitrate", "mrr", "recall", "precision", "map"))
    assert m["ndcg@3"] == pytest.approx((1 / math.log2(3)) / 4)
    assert m["hitrate@3"] == m["recall@3"] == pytest.approx(0.25)
    assert m["mrr@3"] == m["map@3"] == pytest.approx(0.5 / 4)
    assert m["precision@3"] == pytest.approx(0.25 / 3)
    assert m["ndcg@5"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(6)) / 4)
    assert m["hitrate@5"] == pytest.approx(0.5)
    assert m["mrr@5"] == m["map@5"] == pytest.approx((1 / 2 + 1 / 5) / 4)
    assert m["precision@5"] == pytest.approx(0.5 / 5)


def generic_reference(top, targets, k):
    """The metric definitions with a ground-truth set per user (here of size 1)."""
    out = {name: [] for name in ("ndcg", "hitrate", "mrr", "recall", "precision", "map")}
    for pred, t in zip(top, targets):
        gt, g = {int(t)}, 1
        hits = [int(p) in gt for p in pred[:k]]
        dcg = sum(h / math.log2(j + 2) for j, h in enumerate(hits))
        idcg = sum(1 / math.log2(j + 2) for j in range(min(g, k)))
        ap, seen = 0.0, 0
        for j, h in enumerate(hits):
            seen += h
            ap += h * seen / (j + 1)
        first = next((j + 1 for j, h in enumerate(hits) if h), None)
        out["ndcg"].append(dcg / idcg)
        out["hitrate"].append(float(any(hits)))
        out["recall"].append(sum(hits) / g)
        out["precision"].append(sum(hits) / k)
        out["map"].append(ap / min(g, k))
        out["mrr"].append(1 / first if first else 0.0)
    return {f"{n}@{k}": float(np.mean(v)) for n, v in out.items()}


@pytest.mark.parametrize("seed", range(3))
def test_random_against_generic_reference(seed):
    rng = np.random.default_rng(seed)
    n_users, n_items, width = int(rng.integers(1, 200)), int(rng.integers(30, 80)), 20
    top = np.stack([rng.permutation(n_items)[:width] + 1 for _ in range(n_users)])
    targets = rng.integers(1, n_items + 1, n_users)
    ks = (1, 4, 10, 20)
    got = ranking_metrics(top, targets, ks)
    for k in ks:
        want = generic_reference(top, targets, k)
        for name, value in want.items():
            assert got[name] == pytest.approx(value, abs=1e-12), name


def test_ranking_errors():
    with pytest.raises(ValueError, match="ks"):
        ranking_metrics(np.ones((2, 5), int), np.ones(2, int), ks=(10,))
    with pytest.raises(ValueError, match="targets"):
        ranking_metrics(np.ones((2, 5), int), np.ones(3, int), ks=(5,))
    with pytest.raises(ValueError, match="padding"):
        ranking_metrics(np.ones((2, 5), int), np.zeros(2, int), ks=(5,))


def period_fixture():
    # Users 10, 11, 12 (N = 3). User 10 repeats item 1: it still counts as one user for item 1.
    return CSR(offsets=np.array([0, 3, 5, 6]), items=np.array([1, 1, 2, 2, 3, 2], np.int32),
               users=np.array([10, 11, 12]))


def test_item_weights_hand_computed():
    w = item_weights(period_fixture(), n_items=5)
    # u_1 = 1, u_2 = 3, u_3 = 1; items 4, 5 unseen (weight 1); padding 0.
    np.testing.assert_allclose(w, [0.0, 1.0, 0.0, 1.0, 1.0, 1.0])
    tp = CSR(np.array([0, 2, 3, 4, 5]), np.array([1, 2, 1, 1, 3], np.int32), np.arange(4))
    # N = 4: u_1 = 3 -> log2(4/3)/2, u_2 = 1 -> 1, u_3 = 1 -> 1.
    np.testing.assert_allclose(item_weights(tp, 3), [0.0, math.log2(4 / 3) / 2, 1.0, 1.0])


def test_coverage_and_surprisal_hand_computed():
    tp = period_fixture()
    top = np.array([[2, 4], [1, 2]])
    assert coverage(top, test_period=tp, n_items=5) == pytest.approx(2 / 3)  # {1,2} of {1,2,3}
    assert coverage(top, n_items=5, mode="conventional") == pytest.approx(3 / 5)  # {1,2,4} of 5
    # Per user: (w2 + w4)/2 = 0.5, (w1 + w2)/2 = 0.5; reference divides by N = 3 test-period users.
    assert surprisal(top, test_period=tp, n_items=5) == pytest.approx(1.0 / 3)
    assert surprisal(top, test_period=tp, n_items=5, mode="conventional") == pytest.approx(0.5)
    top = np.array([[2, 0], [1, 3], [5, 4]])  # an empty slot counts 0 but K stays 2
    assert coverage(top, test_period=tp, n_items=5) == pytest.approx(1.0)
    assert surprisal(top, test_period=tp, n_items=5) == pytest.approx((0.0 + 1.0 + 1.0) / 3)
    assert surprisal(top, test_period=tp, n_items=5, mode="conventional") == pytest.approx(2.0 / 3)


def test_beyond_accuracy_errors():
    tp = period_fixture()
    with pytest.raises(ValueError, match="mode"):
        coverage(np.ones((1, 2), int), test_period=tp, n_items=5, mode="catalog")
    with pytest.raises(ValueError, match="test_period"):
        coverage(np.ones((1, 2), int), n_items=5)
    with pytest.raises(ValueError, match="n_items"):
        coverage(np.ones((1, 2), int), mode="conventional")
    with pytest.raises(ValueError, match="encoded ids"):
        surprisal(np.full((1, 2), 9), test_period=tp, n_items=5)
