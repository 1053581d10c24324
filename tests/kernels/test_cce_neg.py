"""CCE- (sampled softmax with in-kernel negatives): sampler statistics, and value + gradients of
every implementation against the float64 numpy reference on the same ids.

Chi-square tests use fixed seeds and a fixed number of draws, so they are deterministic; each one
rejects at significance alpha = 1e-3 (threshold: Wilson-Hilferty approximation of the chi-square
quantile), i.e. a correct sampler fails a given test for 1 in 1000 seeds.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels import (
    PopularityTable,
    SampledConfig,
    popularity_table,
    sampled_ce_reference,
    sampled_ce_reference_np,
    sampled_linear_cross_entropy,
    sampled_linear_cross_entropy_bwd,
    sampled_linear_cross_entropy_fwd,
    sampled_negative_ids,
)
from pallas_kernels.cce_neg import build_alias_table, expand_ids, fused, sampling

ALPHA_Z = 3.0902  # standard normal quantile for alpha = 1e-3


def chi2_threshold(df: int, z: float = ALPHA_Z) -> float:
    """Upper chi-square quantile (Wilson-Hilferty), accurate to <1% for df >= 3."""
    a = 2.0 / (9.0 * df)
    return df * (1.0 - a + z * math.sqrt(a)) ** 3


def chi2_stat(observed: np.ndarray, expected: np.ndarray) -> float:
    return float(((observed - expected) ** 2 / expected).sum())


# ----------------------------------------------------------------------------- hash sampler


def test_mulhi32_matches_64bit_product():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2**32, size=4096, dtype=np.uint64)
    b = rng.integers(1, 2**31, size=4096, dtype=np.uint64)
    got = np.asarray(sampling.mulhi32(jnp.asarray(a, jnp.uint32), jnp.asarray(b, jnp.uint32)))
    np.testing.assert_array_equal(got, ((a * b) >> np.uint64(32)).astype(np.uint32))
    # Extremes: 0 and 2^32 - 1 against the largest allowed V.
    edge = jnp.asarray([0, 1, 2**32 - 1], jnp.uint32)
    got = np.asarray(sampling.mulhi32(edge, 2**31 - 1))
    np.testing.assert_array_equal(got, [0, 0, ((2**32 - 1) * (2**31 - 1)) >> 32])


@pytest.mark.parametrize("num_items", [97, 1000])
def test_uniform_ids_chi_square(num_items):
    ids = np.asarray(sampled_negative_ids(123, 200, 500, num_items))  # 100k draws
    assert ids.dtype == np.int32 and ids.min() >= 0 and ids.max() < num_items
    assert ids.size == 100_000
    obs = np.bincount(ids.ravel(), minlength=num_items)
    exp = np.full(num_items, ids.size / num_items)
    assert chi2_stat(obs, exp) < chi2_threshold(num_items - 1)


def test_uniform_ids_cover_a_large_range():
    # V just above 2^20: 64 equal-width bins must be equally hit (multiply-shift covers [0, V)).
    v = 2**20 + 7
    ids = np.asarray(sampled_negative_ids(5, 256, 256, v, sharing="row")).ravel()
    assert ids.min() >= 0 and ids.max() < v
    obs = np.bincount(ids.astype(np.int64) * 64 // v, minlength=64)
    assert chi2_stat(obs, np.full(64, ids.size / 64)) < chi2_threshold(63)


@pytest.mark.parametrize("sharing", ["row", "block"])
def test_consecutive_draws_are_independent(sharing):
    # Joint distribution of (slot j, slot j+1) and of (stream s, stream s+1) at one slot on 7x7 bins.
    v = 7
    ids = np.asarray(sampled_negative_ids(99, 4096, 24, v, sharing=sharing, block_rows=16))
    for a, b in ((ids[:, :-1], ids[:, 1:]), (ids[:-1, :], ids[1:, :])):
        obs = np.bincount((a * v + b).ravel(), minlength=v * v)
        assert chi2_stat(obs, np.full(v * v, a.size / (v * v))) < chi2_threshold(v * v - 1)


def _skewed_counts(rng, v):
    counts = rng.zipf(1.5, size=v).clip(max=500).astype(np.int64)
    counts[rng.random(v) < 0.2] = 0
    counts[0] = 0
    counts[1] = 1
    return counts


def test_alias_table_represents_counts_exactly():
    rng = np.random.default_rng(1)
    counts = _skewed_counts(rng, 5000)
    prob, alias = build_alias_table(counts)
    assert prob.dtype == np.float32 and alias.dtype == np.int32 and prob.shape == (5000,)
    v = counts.size
    implied = prob.astype(np.float64) / v
    np.add.at(implied, alias, (1.0 - prob.astype(np.float64)) / v)
    q = counts / counts.sum()
    np.testing.assert_allclose(implied, q, rtol=1e-5, atol=1e-9)
    assert np.all(implied[counts == 0] == 0.0)


def test_popularity_ids_chi_square():
    rng = np.random.default_rng(2)
    counts = _skewed_counts(rng, 40)
    ids = np.asarray(sampled_negative_ids(7, 250, 400, 40,
                                          sampler=popularity_table(counts)))  # 100k draws
    obs = np.bincount(ids.ravel(), minlength=40)
    q = counts / counts.sum()
    assert obs[q == 0].sum() == 0
    pos = q > 0
    assert chi2_stat(obs[pos], ids.size * q[pos]) < chi2_threshold(int(pos.sum()) - 1)


def test_ids_shapes_and_determinism():
    for sharing, rows in (("row", 45), ("block", 3)):
        ids = sampled_negative_ids(3, 45, 11, 1000, sharing=sharing, block_rows=16)
        assert ids.shape == (rows, 11) and ids.dtype == jnp.int32
        np.testing.assert_array_equal(
            ids, sampled_negative_ids(3, 45, 11, 1000, sharing=sharing, block_rows=16))
        assert np.mean(np.asarray(ids) != np.asarray(
            sampled_negative_ids(4, 45, 11, 1000, sharing=sharing, block_rows=16))) > 0.9
    # Traced seeds (int32, possibly negative) give the same ids as Python ints mod 2^32.
    traced = jax.jit(lambda s: sampled_negative_ids(s, 45, 11, 1000))(jnp.int32(-5))
    np.testing.assert_array_equal(traced, sampled_negative_ids(2**32 - 5, 45, 11, 1000))
    # Row r of "row" sharing does not depend on how many rows there are.
    np.testing.assert_array_equal(sampled_negative_ids(3, 10, 11, 1000),
                                  sampled_negative_ids(3, 45, 11, 1000)[:10])


# ----------------------------------------------------------------------------- loss values


def _problem(rng, n_rows, v, d, dtype, mask_frac=0.25, logit_scale=1.0):
    e = (rng.normal(size=(n_rows, d)) * logit_scale / d**0.25).astype(np.float32)
    c = (rng.normal(size=(v, d)) / d**0.25).astype(np.float32)
    e = np.asarray(jnp.asarray(e, dtype).astype(jnp.float32))  # round to dtype for the reference
    c = np.asarray(jnp.asarray(c, dtype).astype(jnp.float32))
    t = rng.integers(0, v, size=n_rows).astype(np.int32)
    w = rng.random(n_rows) >= mask_frac
    t[~w] = -100  # masked rows may carry any label
    return e, c, t, w


def _ref_ids(seed, n_rows, n, v, sampler, sharing, block_rows, counts):
    tab = popularity_table(counts) if sampler == "popularity" else None
    ids = sampled_negative_ids(seed, n_rows, n, v, sampler=tab, sharing=sharing,
                               block_rows=block_rows)
    return np.asarray(expand_ids(ids, n_rows, sharing, block_rows)), tab


TOL = {jnp.float32: dict(rtol=2e-5, atol=2e-6), jnp.bfloat16: dict(rtol=2e-2, atol=2e-3)}


def _split_loss(e, c, t, reduction, w, **kw):
    """A loss built from sampled_linear_cross_entropy_fwd and _bwd (the forward and backward
    kernels as two passes), differentiable through a custom_vjp."""
    @jax.custom_vjp
    def f(e_, c_):
        rows, _ = sampled_linear_cross_entropy_fwd(e_, c_, t, where=w, **kw)
        return _reduce(rows, w, reduction)

    def fwd(e_, c_):
        rows, lse = sampled_linear_cross_entropy_fwd(e_, c_, t, where=w, **kw)
        return _reduce(rows, w, reduction), (e_, c_, lse)

    def bwd(res, g):
        e_, c_, lse = res
        scale = (1.0 / jnp.maximum(w.sum(), 1)) if reduction == "mean" else 1.0
        d_rows = g if reduction == "none" else jnp.full(t.shape, g * scale, jnp.float32)
        return sampled_linear_cross_entropy_bwd(e_, c_, t, lse, d_rows, where=w, **kw)

    f.defvjp(fwd, bwd)
    return f(e, c)


def _reduce(rows, w, reduction):
    if reduction == "none":
        return rows
    return rows.sum() / (jnp.maximum(w.sum(), 1) if reduction == "mean" else 1)


def check_against_reference(impl, sampler, sharing, dtype, *, n_rows, v, d, n, block_rows,
                            seed, reduction="mean", logit_scale=1.0, min_overflow_rows=0,
                            split=False, **tiles):
    """``logit_scale`` multiplies E (logits of std ~logit_scale); ``min_overflow_rows``: assert
    that at least that many rows have a kept negative logit over 100 above their target's.
    ``split``: through sampled_linear_cross_entropy_fwd / _bwd (the forward and backward
    kernels; the loss with row sharing and a scalar reduction runs the one-pass kernel).
    ``tiles``: SampledConfig fields besides block_rows."""
    rng = np.random.default_rng(seed)
    e, c, t, w = _problem(rng, n_rows, v, d, dtype, logit_scale=logit_scale)
    counts = _skewed_counts(rng, v) if sampler == "popularity" else None
    ids, tab = _ref_ids(seed, n_rows, n, v, sampler, sharing, block_rows, counts)
    loss_ref, de_ref, dc_ref = sampled_ce_reference_np(
        e, c, t, ids, num_items=v, sampler=sampler, log_q=None if tab is None else tab.log_q,
        where=w, reduction=reduction)
    if min_overflow_rows:
        tt = np.where(w, t, 0)
        s = np.einsum("rd,rjd->rj", e.astype(np.float64), c[ids].astype(np.float64))
        s_pos = np.sum(e.astype(np.float64) * c[tt], axis=1)
        gap = np.where(ids != tt[:, None], s - s_pos[:, None], -np.inf).max(axis=1)
        assert np.sum(gap > 100) >= min_overflow_rows, np.sort(gap)[-5:]

    kw = dict(num_negatives=n, seed=seed, sampler=tab, sharing=sharing, impl=impl,
              config=SampledConfig(block_rows=block_rows, **tiles))

    def f(e_, c_):
        if split:
            out = _split_loss(e_, c_, jnp.asarray(t), reduction, jnp.asarray(w), **kw)
        else:
            out = sampled_linear_cross_entropy(e_, c_, jnp.asarray(t), where=jnp.asarray(w),
                                               reduction=reduction, **kw)
        return out.sum() if reduction == "none" else out

    loss, (de, dc) = jax.jit(jax.value_and_grad(f, (0, 1)))(jnp.asarray(e, dtype),
                                                             jnp.asarray(c, dtype))
    assert loss.dtype == jnp.float32 and de.dtype == dtype and dc.dtype == dtype
    loss_ref = np.sum(loss_ref)
    tol = TOL[dtype]
    np.testing.assert_allclose(float(loss), loss_ref, rtol=tol["rtol"] * 0.1 + 1e-6)
    scale_e, scale_c = np.abs(de_ref).max(), np.abs(dc_ref).max()
    np.testing.assert_allclose(np.asarray(de, np.float64), de_ref, rtol=tol["rtol"],
                               atol=tol["atol"] + tol["rtol"] * scale_e)
    np.testing.assert_allclose(np.asarray(dc, np.float64), dc_ref, rtol=tol["rtol"],
                               atol=tol["atol"] + tol["rtol"] * scale_c)
    # Masked rows get exactly zero gradient.
    assert np.all(np.asarray(de)[~w] == 0)


@pytest.mark.parametrize("sampler, sharing, dtype", [
    ("uniform", "row", jnp.float32),
    ("uniform", "row", jnp.bfloat16),
    ("popularity", "row", jnp.bfloat16),
    ("uniform", "block", jnp.float32),
    ("popularity", "block", jnp.bfloat16),
    ("popularity", "block", jnp.float32),
])
def test_xla_matches_reference(sampler, sharing, dtype):
    # Ragged everything: N not a multiple of any chunk, D not a power of two, small V so that
    # negatives often hit the target and repeat within a row.
    check_against_reference("xla", sampler, sharing, dtype, n_rows=45, v=29, d=24, n=13,
                            block_rows=16, seed=11 + len(sharing) + len(sampler))


@pytest.mark.parametrize("reduction, split", [("sum", False), ("none", False), ("mean", True)])
def test_xla_reductions(reduction, split):
    check_against_reference("xla", "uniform", "row", jnp.float32, n_rows=21, v=50, d=8, n=6,
                            block_rows=16, seed=3, reduction=reduction, split=split)


def test_uniform_matches_memory_efficient_srs_ce_neg_formula():
    """MemoryEfficientSRS's CE- written out independently: -1e6 masking, log(n - #rejects)."""
    rng = np.random.default_rng(5)
    n_rows, v, d, n = 33, 6, 8, 10  # V = 6: about 1.7 collisions per row
    e, c, t, _ = _problem(rng, n_rows, v, d, jnp.float32, mask_frac=0.0)
    ids = np.asarray(sampled_negative_ids(17, n_rows, n, v))
    s = e.astype(np.float64) @ c.astype(np.float64).T
    s_pos = s[np.arange(n_rows), t]
    reject = ids == t[:, None]
    s_neg = (s[np.arange(n_rows)[:, None], ids] + math.log(v - 1) - 1e6 * reject
             - np.log(n - reject.sum(1, keepdims=True)))
    logits = np.concatenate([s_pos[:, None], s_neg], axis=1)
    m = logits.max(1)
    expected = np.mean(m + np.log(np.exp(logits - m[:, None]).sum(1)) - s_pos)
    got = jax.jit(lambda e_, c_: sampled_linear_cross_entropy(
        e_, c_, jnp.asarray(t), num_negatives=n, seed=17, impl="xla"))(e, c)
    np.testing.assert_allclose(float(got), expected, rtol=1e-6)


@pytest.mark.parametrize("sampler", ["uniform", "popularity"])
def test_logq_corrected_partition_is_unbiased(sampler):
    """E[sum_kept exp(s_j + corr_j)] = sum_{j != t} exp(s_j): the corrections are right.

    20000 identical rows with independent negatives (row sharing) give 20000 draws of the
    estimate Z_hat = exp(loss + s_pos) - exp(s_pos); their mean must lie within 5 standard errors
    of the exact partition over the non-target items (fixed seed: deterministic).
    """
    rng = np.random.default_rng(6)
    v, d, n, rows, t = 20, 8, 6, 20000, 3
    c = rng.normal(size=(v, d)).astype(np.float32)
    e = np.broadcast_to(rng.normal(size=(1, d)).astype(np.float32), (rows, d))
    counts = rng.integers(1, 50, size=v) if sampler == "popularity" else None
    loss = sampled_linear_cross_entropy(
        jnp.asarray(e), jnp.asarray(c), jnp.full((rows,), t, jnp.int32), num_negatives=n, seed=8,
        sampler=None if counts is None else popularity_table(counts), reduction="none",
        impl="xla")
    s = e[0].astype(np.float64) @ c.astype(np.float64).T
    z_hat = np.exp(np.asarray(loss, np.float64) + s[t]) - np.exp(s[t])
    z_exact = np.exp(np.delete(s, t)).sum()
    stderr = z_hat.std() / math.sqrt(rows)
    assert abs(z_hat.mean() - z_exact) < 5 * stderr, (z_hat.mean(), z_exact, stderr)


def test_jax_reference_agrees_with_numpy_reference():
    rng = np.random.default_rng(8)
    e, c, t, w = _problem(rng, 19, 23, 8, jnp.float32)
    counts = _skewed_counts(rng, 23)
    ids, tab = _ref_ids(2, 19, 7, 23, "popularity", "row", 16, counts)
    f = lambda e_, c_: sampled_ce_reference(e_, c_, jnp.asarray(t), jnp.asarray(ids), num_items=23,
                                            sampler="popularity", log_q=tab.log_q,
                                            where=jnp.asarray(w))
    loss, (de, dc) = jax.jit(jax.value_and_grad(f, (0, 1)))(jnp.asarray(e), jnp.asarray(c))
    l_np, de_np, dc_np = sampled_ce_reference_np(e, c, t, ids, num_items=23, sampler="popularity",
                                                 log_q=tab.log_q, where=w)
    np.testing.assert_allclose(float(loss), l_np, rtol=1e-5)
    np.testing.assert_allclose(de, de_np, atol=1e-6)
    np.testing.assert_allclose(dc, dc_np, atol=1e-6)


def test_all_rows_masked_gives_zero_loss_and_grads():
    e = jnp.ones((5, 8)); c = jnp.ones((9, 8))
    f = lambda e_, c_: sampled_linear_cross_entropy(e_, c_, jnp.zeros(5, jnp.int32), num_negatives=4,
                                                    seed=0, where=jnp.zeros(5, bool), impl="xla")
    loss, (de, dc) = jax.jit(jax.value_and_grad(f, (0, 1)))(e, c)
    assert float(loss) == 0.0 and not np.any(de) and not np.any(dc)


def test_traced_seed_changes_loss_and_matches_eager():
    rng = np.random.default_rng(4)
    e, c, t, w = _problem(rng, 16, 40, 8, jnp.float32)
    args = (jnp.asarray(e), jnp.asarray(c), jnp.asarray(t))
    step = jax.jit(lambda s: sampled_linear_cross_entropy(*args, num_negatives=5, seed=s,
                                                          where=jnp.asarray(w), impl="xla"))
    l1, l2 = float(step(jnp.int32(1))), float(step(jnp.int32(2)))
    assert l1 != l2
    eager = sampled_linear_cross_entropy(*args, num_negatives=5, seed=1, where=jnp.asarray(w),
                                         impl="xla")
    np.testing.assert_allclose(l1, float(eager), rtol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    (dict(sampler="zipf"), "PopularityTable"),
    (dict(sharing="batch"), "sharing"),
    (dict(num_negatives=0), "num_negatives"),
    (dict(sampler=dict(counts=3)), "PopularityTable"),
    (dict(reduction="max"), "reduction"),
    (dict(impl="cuda"), "impl"),
    (dict(impl="interpret", config=dict(block_rows=24)), "block_rows"),
    (dict(impl="interpret", config=dict(row_block=4)), "row_block"),
    (dict(config=dict(num_warps=0)), "num_warps"),
    (dict(config="tiles"), "SampledConfig"),
    (dict(seed=jnp.ones(2, jnp.int32)), "scalar"),
    (dict(vocab_parallel="mesh"), "VocabParallelOptions"),
])
def test_bad_arguments_raise(kwargs, match):
    args = dict(num_negatives=4, seed=0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        if isinstance(args.get("config"), dict):
            args["config"] = SampledConfig(**args["config"])
        sampled_linear_cross_entropy(jnp.ones((4, 16)), jnp.ones((10, 16)),
                                     jnp.zeros(4, jnp.int32), **args)


def test_popularity_table_errors_are_one_line():
    with pytest.raises(ValueError, match="labels"):
        sampled_linear_cross_entropy(jnp.ones((4, 16)), jnp.ones((10, 16)),
                                     jnp.zeros(4, jnp.int32), num_negatives=4, seed=0,
                                     sampler=popularity_table(np.ones(3)))
    with pytest.raises(ValueError, match="traced"):
        jax.jit(popularity_table)(jnp.ones(10))
    tab = popularity_table(np.arange(10) + 1.0)
    assert isinstance(tab, PopularityTable)
    np.testing.assert_array_equal(tab.host_counts(), np.arange(10) + 1.0)
    # The counts stay on the host when the table is a jit argument (static pytree data).
    assert jax.jit(lambda t_: t_.host_counts().sum() + t_.prob.sum())(tab) > 55


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="hidden sizes"):
        sampled_linear_cross_entropy(jnp.ones((4, 8)), jnp.ones((10, 16)), jnp.zeros(4, jnp.int32),
                                     num_negatives=2, seed=0)
    with pytest.raises(ValueError, match="targets"):
        sampled_linear_cross_entropy(jnp.ones((4, 8)), jnp.ones((10, 8)), jnp.zeros(3, jnp.int32),
                                     num_negatives=2, seed=0)


# ----------------------------------------------------------------------------- Pallas kernels


@pytest.mark.parametrize("sampler, sharing, dtype, split", [
    ("uniform", "row", jnp.float32, True),
    ("popularity", "row", jnp.bfloat16, True),
    ("uniform", "block", jnp.bfloat16, False),
    ("popularity", "block", jnp.float32, False),
    ("uniform", "block", jnp.float32, True),
])
def test_pallas_interpret_matches_reference(sampler, sharing, dtype, split):
    # N = 37 is not a multiple of the 16-row tile; n = 21 is not a multiple of the 16-id chunk.
    # Row sharing runs the forward and backward kernels here (through the _fwd / _bwd halves);
    # the one-pass kernel has its own tests below.
    check_against_reference("interpret", sampler, sharing, dtype, n_rows=37, v=31, d=16, n=21,
                            block_rows=16, seed=21 + len(sampler), row_block=16, neg_block=16,
                            split=split)


@pytest.mark.parametrize("sampler, sharing, dtype", [
    ("uniform", "block", jnp.float32), ("popularity", "block", jnp.bfloat16),
    ("uniform", "row", jnp.float32)])
def test_pallas_interpret_logits_far_above_the_target(sampler, sharing, dtype):
    # Logits of std ~60: kept negatives exceed their row's target logit by > 100, where the
    # block forward's sums against the target logit overflow float32 and the tile is redone
    # with a running max (kernels._block_fwd_kernel; without that step the block cases fail).
    # Row sharing keeps a running max throughout.
    check_against_reference("interpret", sampler, sharing, dtype, n_rows=37, v=31, d=16, n=21,
                            block_rows=16, seed=41 + len(sharing), row_block=16, neg_block=16,
                            logit_scale=60.0, min_overflow_rows=3, split=sharing == "row")


@pytest.mark.parametrize("sampler, dtype, reduction, programs", [
    ("uniform", jnp.float32, "mean", None),  # one program per tile
    ("uniform", jnp.bfloat16, "sum", 2),  # 2 programs: 3 and 3 tiles
    ("popularity", jnp.bfloat16, "mean", 4),  # 4 programs: 2, 2, 1, 1 tiles
    ("popularity", jnp.float32, "sum", 1),  # one program, every tile
])
def test_pallas_interpret_one_pass_row(monkeypatch, sampler, dtype, reduction, programs):
    # The one-pass kernel (loss and gradients in the forward rule, scaled by the cotangent in
    # the backward) on its persistent grid; N = 45 leaves a ragged last 8-row tile, V = 29
    # makes targets collide.
    if programs:
        monkeypatch.setattr(fused, "DEFAULT_PROGRAMS", programs)
    check_against_reference("interpret", sampler, "row", dtype, n_rows=45, v=29, d=16, n=21,
                            block_rows=16, seed=7 + (programs or 0), row_block=8,
                            reduction=reduction)


def test_one_pass_row_is_picked_where_it_applies_and_scales_by_the_cotangent():
    rng = np.random.default_rng(5)
    e, c, t, w = _problem(rng, 24, 40, 16, jnp.float32)
    args = (jnp.asarray(e), jnp.asarray(c), jnp.asarray(t))
    kw = dict(num_negatives=6, seed=3, impl="interpret", config=SampledConfig(row_block=8))

    def loss(reduction, split=False):
        if split:
            return lambda e_, c_: _split_loss(e_, c_, args[2], reduction, jnp.asarray(w), **kw)
        return lambda e_, c_: sampled_linear_cross_entropy(
            e_, c_, args[2], where=jnp.asarray(w), reduction=reduction, **kw)

    def kernels(f):
        return str(jax.make_jaxpr(jax.grad(lambda *a: jnp.sum(f(*a)), (0, 1)))(*args[:2]))

    assert "value_and_grad_row" in kernels(loss("mean"))
    assert "value_and_grad_row" not in kernels(loss("none"))
    # A cotangent other than 1 (here 2.5 * loss**2 / 2 -> 2.5 * loss): the one-pass gradients
    # equal the two-pass ones; the plain (undifferentiated) value is the same as well.
    outer = lambda f: (lambda e_, c_: 1.25 * f(e_, c_) ** 2)
    g_one = jax.grad(outer(loss("sum")), (0, 1))(*args[:2])
    g_two = jax.grad(outer(loss("sum", split=True)), (0, 1))(*args[:2])
    for a, b in zip(g_one, g_two):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(loss("mean")(*args[:2]), loss("mean", split=True)(*args[:2]),
                               rtol=1e-6)


def check_float32_classifier_gradient(impl, sharing, split, *, n_rows=45, v=29, n=13,
                                      block_rows=16):
    # bf16 embeddings, float32 classifier (mixed precision: float32 parameters). The kernels
    # read C in bf16; dC leaves in float32 as summed, not rounded to bf16 first. The classifier
    # holds bf16-representable values, so the kernels' cast is exact and the float64 reference
    # is the exact gradient of what they compute.
    rng = np.random.default_rng(17 + n_rows)
    d = 16
    e, c, t, w = _problem(rng, n_rows, v, d, jnp.bfloat16)
    ids, _ = _ref_ids(3, n_rows, n, v, "uniform", sharing, block_rows, None)
    _, _, dc_ref = sampled_ce_reference_np(e, c, t, ids, num_items=v, sampler="uniform", where=w)

    kw = dict(num_negatives=n, seed=3, sharing=sharing, impl=impl,
              config=SampledConfig(block_rows=block_rows, row_block=8, neg_block=16))

    def f(c_):
        e_ = jnp.asarray(e, jnp.bfloat16)
        if split:
            return _split_loss(e_, c_, jnp.asarray(t), "mean", jnp.asarray(w), **kw)
        return sampled_linear_cross_entropy(e_, c_, jnp.asarray(t), where=jnp.asarray(w), **kw)

    dc = jax.jit(jax.grad(f))(jnp.asarray(c, jnp.float32))
    assert dc.dtype == jnp.float32
    scale = np.abs(dc_ref).max()
    # Row sharing sums dC in float32 throughout; block sharing's tensor-core products take the
    # probabilities in bf16 (the kernels' operand dtype).
    tol = 1e-4 if sharing == "row" else 2e-2
    np.testing.assert_allclose(np.asarray(dc, np.float64), dc_ref, rtol=tol, atol=tol * scale)
    if sharing == "row":  # the tolerance is finer than a bf16 rounding of dC
        rounded = np.asarray(jnp.asarray(dc_ref, jnp.bfloat16), np.float64)
        assert np.max(np.abs(rounded - dc_ref) - tol * (np.abs(dc_ref) + scale)) > 0


@pytest.mark.parametrize("impl, sharing, split", [
    ("xla", "row", False), ("interpret", "row", False), ("interpret", "row", True),
    ("interpret", "block", False)])
def test_float32_classifier_gets_its_float32_gradient(impl, sharing, split):
    check_float32_classifier_gradient(impl, sharing, split)


def test_pallas_interpret_matches_xla_none_reduction():
    rng = np.random.default_rng(12)
    e, c, t, w = _problem(rng, 20, 40, 16, jnp.float32)
    kw = dict(num_negatives=6, seed=jnp.int32(-3), where=jnp.asarray(w), reduction="none",
              sharing="row", config=SampledConfig(row_block=16))
    a = sampled_linear_cross_entropy(jnp.asarray(e), jnp.asarray(c), jnp.asarray(t), impl="xla",
                                     **kw)
    b = sampled_linear_cross_entropy(jnp.asarray(e), jnp.asarray(c), jnp.asarray(t),
                                     impl="interpret", **kw)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    assert np.all(np.asarray(b)[~w] == 0)


def test_get_default_is_the_tile_table():
    from pallas_kernels.cce_neg.config import get_default

    assert get_default(131072, 10**6, 64) == SampledConfig(128, 16, 32, 4, None)
    assert get_default(131072, 10**6, 128) == SampledConfig(128, 8, 32, 4, None)
    assert get_default(131072, 10**6, 256) == SampledConfig(128, 8, 64, 8, None)
    # 4-byte inputs: 64 ids of D = 256 would exceed the H100's shared memory.
    assert get_default(131072, 10**6, 256, jnp.float32) == SampledConfig(128, 8, 32, 8, None)
    assert get_default(131072, 10**6, 128, jnp.float32) == get_default(131072, 10**6, 128)


def test_pallas_without_gpu_is_refused():
    if jax.default_backend() == "gpu":
        pytest.skip("checks the CPU-only error")
    with pytest.raises(ValueError, match="impl='interpret'"):
        sampled_linear_cross_entropy(jnp.ones((4, 16)), jnp.ones((10, 16)),
                                     jnp.zeros(4, jnp.int32), num_negatives=2, seed=0,
                                     impl="pallas")


def test_auto_impl_picks_backend():
    f = lambda e: sampled_linear_cross_entropy(e, jnp.ones((10, 16)), jnp.zeros(4, jnp.int32),
                                               num_negatives=2, seed=0)
    jaxpr = str(jax.make_jaxpr(jax.grad(f))(jnp.ones((4, 16))))
    assert ("pallas_call" in jaxpr) == (jax.default_backend() == "gpu")


# ----------------------------------------------------------------------------- on the device


@pytest.mark.gpu
@pytest.mark.parametrize("sampler", ["uniform", "popularity"])
@pytest.mark.parametrize("sharing, split", [("row", False), ("row", True), ("block", False)])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_gpu_pallas_matches_reference(sampler, sharing, split, dtype):
    # Compiled Triton kernels: ragged N, n not a multiple of the chunk, vector atomics with
    # duplicate ids (V small relative to N * n). Row sharing: the one-pass kernel (the loss)
    # and the forward + backward kernels (the _fwd / _bwd halves).
    check_against_reference("pallas", sampler, sharing, dtype, n_rows=1000, v=3001, d=64,
                            n=200, block_rows=64, seed=5 + len(sharing), row_block=32,
                            neg_block=64, split=split)


@pytest.mark.gpu
@pytest.mark.parametrize("sampler, d, dtype, programs", [
    ("uniform", 64, jnp.bfloat16, None),  # 125 tiles, one per program
    ("uniform", 128, jnp.float32, 7),  # 7 programs of 17 or 18 tiles
    ("popularity", 64, jnp.float32, 16),
    ("popularity", 256, jnp.bfloat16, None),
    ("uniform", 256, jnp.bfloat16, 3),
])
@pytest.mark.parametrize("split", [False, True])
def test_gpu_one_pass_and_two_pass_row(monkeypatch, sampler, d, dtype, programs, split):
    # Compiled one-pass kernel (persistent grid, logits through a per-program scratch read back
    # by other threads after a barrier) against the float64 reference, next to the two-pass
    # kernels on the same problem; ragged N, n = 100.
    if split and programs:
        pytest.skip("the persistent grid is the one-pass kernel's")
    if programs:
        monkeypatch.setattr(fused, "DEFAULT_PROGRAMS", programs)
    check_against_reference("pallas", sampler, "row", dtype, n_rows=999, v=3001, d=d, n=100,
                            block_rows=64, seed=d + len(sampler), row_block=8, split=split)


@pytest.mark.gpu
@pytest.mark.parametrize("sharing, d, dtype", [
    ("block", 128, jnp.bfloat16), ("block", 256, jnp.float32), ("block", 64, jnp.float32),
    ("row", 64, jnp.bfloat16), ("row", 128, jnp.float32)])
def test_gpu_default_tiles(sharing, d, dtype):
    # The per-D tile defaults (config.default_row_block / default_neg_block: 16 rows at D = 64,
    # 32 ids up to D = 128), which the other gpu tests override.
    check_against_reference("pallas", "uniform", sharing, dtype, n_rows=1000, v=3001, d=d, n=200,
                            block_rows=128, seed=d + len(sharing))


@pytest.mark.gpu
@pytest.mark.parametrize("sampler, sharing, dtype", [
    ("uniform", "block", jnp.float32), ("popularity", "block", jnp.bfloat16)])
def test_gpu_logits_far_above_the_target(sampler, sharing, dtype):
    # As the interpreter test, compiled: the MUFU exponentials (cce.common.exp2_shifted) and
    # the fallback under Triton.
    check_against_reference("pallas", sampler, sharing, dtype, n_rows=1000, v=3001, d=64,
                            n=200, block_rows=64, seed=7 + len(sharing), neg_block=64,
                            logit_scale=60.0, min_overflow_rows=20)


@pytest.mark.gpu
@pytest.mark.parametrize("sharing, split", [("row", False), ("row", True), ("block", False)])
def test_gpu_float32_classifier_gets_its_float32_gradient(sharing, split):
    check_float32_classifier_gradient("pallas", sharing, split, n_rows=1000, v=3001, n=200,
                                      block_rows=64)


@pytest.mark.gpu
@pytest.mark.parametrize("sharing", ["row", "block"])
def test_gpu_pallas_large_catalog_d256(sharing):
    # V > 2^16 exercises the high half of the multiply-shift; D = 256 the widest rows.
    check_against_reference("pallas", "uniform", sharing, jnp.bfloat16, n_rows=300, v=200_003,
                            d=256, n=127, block_rows=128, seed=9, row_block=32, neg_block=64)
