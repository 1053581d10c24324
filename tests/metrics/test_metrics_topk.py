"""top_k_items: chunked search == brute force with exclusions; bounded score blocks; errors."""

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srs_jax.metrics import chunked_top_k, popularity_top_k, top_k_items


@dataclass(frozen=True)
class CSR:  # the fields of srs_jax.data.Sequences that the metrics read
    offsets: np.ndarray
    items: np.ndarray
    users: np.ndarray


def random_histories(rng, n_users, n_items, max_len):
    lens = rng.integers(0, max_len + 1, n_users)
    lens[0] = 0
    items = rng.integers(1, n_items + 1, lens.sum()).astype(np.int32)  # repeats included
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    return CSR(offsets, items, np.arange(n_users, dtype=np.int64))


def brute_force(query, items, k, exclude):
    scores = np.asarray(query, np.float64) @ np.asarray(items, np.float64).T
    if exclude is not None:
        for u in range(scores.shape[0]):
            seen = exclude.items[exclude.offsets[u]:exclude.offsets[u + 1]]
            scores[u, seen - 1] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top = order + 1
    return np.where(np.isneginf(np.take_along_axis(scores, order, 1)), 0, top), scores


@pytest.mark.parametrize("seed", range(4))
def test_chunked_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    n_users, n_items, dim = int(rng.integers(1, 60)), int(rng.integers(5, 300)), int(rng.integers(2, 9))
    k = int(rng.integers(1, min(n_items, 25) + 1))
    query = rng.normal(size=(n_users, dim)).astype(np.float32)
    items = rng.normal(size=(n_items, dim)).astype(np.float32)
    exclude = random_histories(rng, n_users, n_items, max_len=int(rng.integers(1, 40)))
    want, scores = brute_force(query, items, k, exclude)
    for user_chunk, item_chunk in [(7, 16), (n_users, n_items), (3, n_items + 50), (64, 1 + seed)]:
        got = top_k_items(query, items, k, exclude=exclude, user_chunk=user_chunk, item_chunk=item_chunk)
        assert got.shape == (n_users, k) and got.dtype == np.int32
        # Equal up to exact float32 ties: compare the float64 scores of the returned ids.
        got_scores = np.take_along_axis(scores, np.maximum(got, 1) - 1, 1)
        want_scores = np.take_along_axis(scores, np.maximum(want, 1) - 1, 1)
        np.testing.assert_allclose(np.where(got > 0, got_scores, 0), np.where(want > 0, want_scores, 0),
                                   rtol=1e-5, atol=1e-5)
        assert np.mean(got == want) > 0.98
        for u in range(n_users):  # never a seen item, never a duplicate
            seen = set(exclude.items[exclude.offsets[u]:exclude.offsets[u + 1]].tolist())
            real = got[u][got[u] > 0]
            assert not seen & set(real.tolist()) and len(set(real.tolist())) == len(real)
    got = top_k_items(query, items, k, exclude=None, user_chunk=5, item_chunk=11)
    np.testing.assert_array_equal(got, brute_force(query, items, k, None)[0])


def test_users_with_too_few_unseen_items_get_zero_slots():
    items = np.eye(6, dtype=np.float32)[:, :3] + np.arange(6, dtype=np.float32)[:, None] * 0.01
    query = np.ones((2, 3), np.float32)
    exclude = CSR(np.array([0, 4, 4]), np.array([1, 2, 3, 4], np.int32), np.arange(2))
    got = top_k_items(query, items, 4, exclude=exclude, user_chunk=2, item_chunk=4)
    # Scores: ids 1-3 ~1.0x, ids 4-6 = 0.03, 0.04, 0.05. User 0 has seen 1-4: only 6, 5 remain.
    np.testing.assert_array_equal(got[0], [6, 5, 0, 0])
    assert (got[1] > 0).all()


def test_bfloat16_query_and_score_block_bound():
    rng = np.random.default_rng(7)
    query = jnp.asarray(rng.normal(size=(8, 4)), jnp.bfloat16)
    items = jnp.asarray(rng.normal(size=(1000, 4)), jnp.float32)
    excl = jnp.asarray(rng.integers(-1, 1000, (8, 16)), jnp.int32)
    got = top_k_items(query, items, 5, user_chunk=8, item_chunk=64)
    scores = np.asarray(query, np.float32) @ np.asarray(items.astype(jnp.bfloat16), np.float32).T
    np.testing.assert_allclose(np.take_along_axis(scores, got - 1, 1), -np.sort(-scores, 1)[:, :5], rtol=1e-2)
    # No intermediate of the jitted search is larger than user_chunk x item_chunk (8 x 64).
    jaxpr = jax.make_jaxpr(lambda q, i, e: chunked_top_k(q, i, 5, item_chunk=64, exclude=e))(query, items, excl)
    sizes = []

    def walk(jp):
        for eqn in jp.eqns:
            sizes.extend(int(np.prod(v.aval.shape)) for v in eqn.outvars if hasattr(v.aval, "shape"))
            for p in eqn.params.values():
                if hasattr(p, "jaxpr") and hasattr(p.jaxpr, "eqns"):
                    walk(p.jaxpr)
                elif hasattr(p, "eqns"):
                    walk(p)

    walk(jaxpr.jaxpr)
    assert max(sizes) == 8 * 64  # the loop body was walked and its score block is the largest


def test_popularity_top_k():
    rng = np.random.default_rng(3)
    counts = np.concatenate([[0], rng.integers(0, 10, 40)])
    exclude = random_histories(rng, 12, 40, 15)
    got = popularity_top_k(counts, 6, n_users=12, exclude=exclude, user_chunk=5, item_chunk=7)
    for u in range(12):
        seen = set(exclude.items[exclude.offsets[u]:exclude.offsets[u + 1]].tolist())
        ranked = [i for i in sorted(range(1, 41), key=lambda i: (-counts[i], i)) if i not in seen][:6]
        np.testing.assert_array_equal(got[u], ranked)


def test_errors():
    q, it = np.ones((3, 2), np.float32), np.ones((5, 2), np.float32)
    with pytest.raises(ValueError, match="k=6"):
        top_k_items(q, it, 6)
    with pytest.raises(ValueError, match="rows"):
        top_k_items(q, it, 2, exclude=CSR(np.array([0, 1]), np.array([1]), np.array([0])))
    with pytest.raises(ValueError, match=r"\[U, H\]"):
        top_k_items(q, np.ones((5, 3)), 2)


def test_two_million_item_catalog():
    """The target scale: V = 2M items (small H to keep CPU time low), history exclusions."""
    rng = np.random.default_rng(11)
    n_items, n_users, k = 2_000_000, 6, 10
    items = rng.normal(size=(n_items, 4)).astype(np.float32)
    query = rng.normal(size=(n_users, 4)).astype(np.float32)
    scores = query.astype(np.float64) @ items.astype(np.float64).T
    best = np.argsort(-scores, axis=1)[:, :k] + 1
    # Each user has seen their 3 best items (and some random ones): they must be skipped.
    seen = np.concatenate([best[:, :3], rng.integers(1, n_items + 1, (n_users, 5))], axis=1)
    exclude = CSR(np.arange(0, seen.size + 1, seen.shape[1]), seen.ravel().astype(np.int32), np.arange(n_users))
    got = top_k_items(query, items, k, exclude=exclude, user_chunk=4, item_chunk=1 << 18)
    for u in range(n_users):
        s = scores[u].copy()
        s[seen[u] - 1] = -np.inf
        want = np.argsort(-s)[:k] + 1
        np.testing.assert_allclose(s[got[u] - 1], s[want - 1], rtol=1e-5)
