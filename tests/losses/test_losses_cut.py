"""cce / cce_neg wrappers vs the plain-JAX losses and the kernels' own sampled ids (XLA path on CPU)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pallas_kernels
from loss_refs import compute as loss_of
from srs_jax.losses import kernel_seed, sampled



def problem(seed, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    n, h, v = int(rng.integers(20, 50)), 16, int(rng.integers(20, 90))
    hidden = jnp.asarray(rng.normal(0, 1, (n, h)), dtype)
    classifier = jnp.asarray(rng.normal(0, 0.5, (v, h)), jnp.float32)
    where = rng.random(n) < 0.75
    labels = np.where(where, rng.integers(0, v, n), -1).astype(np.int32)
    counts = np.concatenate([[0], rng.integers(0, 30, v)])  # int[V + 1] by encoded id
    counts[1] = 3
    return rng, hidden, classifier, jnp.asarray(labels), jnp.asarray(where), counts


def value_and_grads(fn, hidden, classifier):
    v, (gh, gc) = jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))(hidden, classifier)
    return float(v), np.asarray(gh, np.float32), np.asarray(gc, np.float32)


@pytest.mark.parametrize("seed,dtype", [(0, jnp.float32), (1, jnp.bfloat16)])
def test_cce_equals_ce(seed, dtype):
    _, hidden, classifier, labels, where, _ = problem(seed, dtype)
    key = jax.random.key(seed)
    got = value_and_grads(lambda h, c: loss_of({"type": "cce", "impl": "xla"}, h, c, labels, where, key=key),
                          hidden, classifier)
    want = value_and_grads(lambda h, c: loss_of({"type": "ce"}, h, c, labels, where, key=key),
                           hidden, classifier)
    tol = 1e-5 if dtype == jnp.float32 else 2e-2
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
    for g, w in zip(got[1:], want[1:]):
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol * np.abs(w).max())


@pytest.mark.parametrize("seed,sampler,sharing", [(2, "uniform", "row"), (3, "popularity", "row"),
                                                  (4, "uniform", "block"), (5, "popularity", "block")])
def test_cce_neg_equals_ce_neg_on_the_kernel_ids(seed, sampler, sharing):
    rng, hidden, classifier, labels, where, counts = problem(seed)
    n_rows, n_items = hidden.shape[0], classifier.shape[0]
    num_neg = int(rng.integers(2, 40))
    key = jax.random.key(seed)
    cfg = {"type": "cce_neg", "num_negatives": num_neg, "sampler": sampler, "sharing": sharing, "impl": "xla"}
    kernel = value_and_grads(lambda h, c: loss_of(cfg, h, c, labels, where, key=key, item_counts=counts),
                             hidden, classifier)
    # The ids the kernels draw for this seed (one set per row, or per block of 128 rows), fed to
    # the plain-JAX CE- estimator.
    table = pallas_kernels.popularity_table(counts[1:]) if sampler == "popularity" else None
    ids = pallas_kernels.sampled_negative_ids(kernel_seed(key), n_rows, num_neg, n_items,
                                              sampler=table, sharing=sharing)
    ids = jnp.asarray(np.asarray(ids)[np.arange(n_rows) // (128 if sharing == "block" else 1)])
    plain = value_and_grads(lambda h, c: sampled.sampled_softmax_loss(h, c, labels, where, ids, sampler=sampler,
                                                                      item_counts=counts), hidden, classifier)
    np.testing.assert_allclose(kernel[0], plain[0], rtol=1e-5)
    for g, w in zip(kernel[1:], plain[1:]):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
    # A different key gives different negatives (and so a different loss).
    other = loss_of(cfg, hidden, classifier, labels, where, key=jax.random.key(seed + 100), item_counts=counts)
    assert float(other) != kernel[0]


@pytest.mark.parametrize("seed,sampler,sharing,dtype", [(6, "uniform", "row", jnp.float32),
                                                        (7, "popularity", "block", jnp.bfloat16)])
def test_cce_neg_pallas_kernels_equal_the_xla_path(seed, sampler, sharing, dtype):
    # impl='interpret' runs the Pallas kernels (in the interpreter) through the loss object: the
    # same draws and the same math as impl='xla', up to float summation order.
    rng, hidden, classifier, labels, where, counts = problem(seed, dtype)
    hidden = hidden[:32]  # interpreter time: few rows
    labels, where = labels[:32], where[:32]
    cfg = {"type": "cce_neg", "num_negatives": int(rng.integers(2, 20)), "sampler": sampler,
           "sharing": sharing}
    key = jax.random.key(seed)
    got, want = (value_and_grads(lambda h, c: loss_of(dict(cfg, impl=impl), h, c, labels, where,
                                                      key=key, item_counts=counts),
                                 hidden, classifier) for impl in ("interpret", "xla"))
    tol = 1e-5 if dtype == jnp.float32 else 1e-2
    np.testing.assert_allclose(got[0], want[0], rtol=tol)
    for g, w in zip(got[1:], want[1:]):
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol * np.abs(w).max())


def test_the_classifier_dtype_is_kept_for_cce_neg_only():
    # bf16 hidden states, float32 classifier (the training step passes the parameters): cce_neg
    # gets the float32 table and returns its float32 dC as summed (the kernel API's own
    # gradient); every other loss gets the table cast to bf16 first.
    _, hidden, classifier, labels, where, _ = problem(5, jnp.bfloat16)
    key = jax.random.key(5)
    for loss_type in ("cce_neg", "ce_neg", "ce"):
        cfg = {"type": loss_type, "num_negatives": 7, "impl": "xla"}
        gc = jax.jit(jax.grad(lambda c: loss_of(cfg, hidden, c, labels, where, key=key)))(
            classifier)
        assert gc.dtype == jnp.float32
        if loss_type == "cce_neg":
            want = jax.jit(jax.grad(lambda c: pallas_kernels.sampled_linear_cross_entropy(
                hidden, c, jnp.where(where, labels, 0), num_negatives=7, seed=kernel_seed(key),
                where=where, impl="xla")))(classifier)
            assert np.any(np.asarray(gc) != np.asarray(gc.astype(jnp.bfloat16), np.float32))
        else:
            want = jax.jit(jax.grad(lambda c: loss_of(
                cfg, hidden, c.astype(jnp.bfloat16), labels, where, key=key)))(classifier)
        np.testing.assert_array_equal(gc, want)
