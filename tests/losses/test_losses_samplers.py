"""Negative samplers: support, distribution (binomial bounds), sharing, determinism."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srs_jax.losses import samplers


def binomial_ok(observed, expected_p, draws, sigmas=5.0):
    sd = np.sqrt(draws * expected_p * (1 - expected_p)) + 1e-9
    return np.abs(observed - draws * expected_p) <= sigmas * sd + 1


@pytest.mark.parametrize("n_items", [7, 113])
def test_uniform_distribution(n_items):
    ids = np.asarray(samplers.sample_negatives(jax.random.key(n_items), 400, 250, n_items))
    assert ids.shape == (400, 250) and ids.dtype == np.int32
    assert ids.min() >= 0 and ids.max() < n_items
    freq = np.bincount(ids.ravel(), minlength=n_items)
    assert np.all(binomial_ok(freq, 1.0 / n_items, ids.size))
    assert len(np.unique(ids[:, 0])) > 1  # rows differ


def test_popularity_distribution_and_zero_counts():
    rng = np.random.default_rng(0)
    n_items = 60
    counts = rng.integers(0, 50, n_items + 1)
    counts[0] = 0
    counts[[3, 17, 59]] = 0
    counts[60] = 400  # one very popular item (the last label: searchsorted edge)
    fn = jax.jit(lambda k, c: samplers.sample_negatives(k, 500, 200, n_items, sampler="popularity",
                                                        item_counts=c))
    ids = np.asarray(fn(jax.random.key(1), jnp.asarray(counts)))
    q = counts[1:] / counts[1:].sum()
    freq = np.bincount(ids.ravel(), minlength=n_items)
    assert np.all(freq[q == 0] == 0)
    assert np.all(binomial_ok(freq, q, ids.size))
    # log q matches the counts (labels, encoded ids shifted by one).
    lq = np.asarray(samplers.log_q(jnp.asarray([[0, 59]]), n_items, sampler="popularity", item_counts=counts))
    np.testing.assert_allclose(lq[0], np.log(q[[0, 59]]), rtol=1e-5)


def test_batch_sharing_and_determinism():
    a = samplers.sample_negatives(jax.random.key(3), 9, 5, 20, sharing="batch")
    assert a.shape == (9, 5) and np.all(np.asarray(a) == np.asarray(a)[:1])
    b = samplers.sample_negatives(jax.random.key(3), 9, 5, 20, sharing="batch")
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    c = samplers.sample_negatives(jax.random.key(4), 9, 5, 20, sharing="batch")
    assert np.any(np.asarray(a) != np.asarray(c))


def test_bad_counts():
    with pytest.raises(ValueError, match="shape"):
        samplers.label_counts(np.ones(5), 10)
    with pytest.raises(ValueError, match="non-negative"):
        samplers.label_counts(np.zeros(11), 10)
    with pytest.raises(ValueError, match="non-negative"):
        samplers.label_counts(np.array([0, -1, 3]), 2)
    np.testing.assert_array_equal(np.asarray(samplers.label_counts(np.array([0, 1, 2]), 2)), [1, 2])
