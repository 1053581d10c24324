"""Gradient filtering of the CCE backward (``filter_eps``) against a float64 numpy reference of
the *filtered* semantics, on CPU: impl="xla" and impl="pallas" in the interpreter (tiny shapes),
plus the Triton lowering of the filtered kernels (lowered for CUDA on the CPU, no GPU needed).

Filtered semantics (what ``filtered_reference`` computes): order the catalog by descending mean
logit ``mean_r(e_r) . c_v`` over the counted rows, cut (rows x ordered catalog) into the
implementation's tiles (rows [i bn, (i+1) bn), columns [j bv, (j+1) bv), ragged last ones), and
drop every tile whose max |P - onehot| over its rows with a nonzero cotangent is < eps. The loss
is unchanged. Tolerances are test_cce.py's, applied to the kept entries:
  |got - filtered ref| <= W_kept @ |C| (dE), W_kept^T @ |E| (dC)
and the distance to the exact gradient is bounded by what was dropped:
  |got - exact| <= |g G|_dropped @ |C| + W @ |C|   (dC likewise with |E|).
Each tile's decision is checked to be at least 0.1% of eps away from the threshold, so float32
(and bf16-input) rounding cannot flip it.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels import linear_cross_entropy
from pallas_kernels.cce import ops, reference
from pallas_kernels.cce.common import KernelConfig
from tests.kernels.cuda_lowering import lower_for_cuda
from tests.kernels.test_cce import (
    DTYPES, EPS32, GRAD_RTOL, _rng, make_inputs, random_shape, reference_f64)

TWO_PASS = dict(impl="pallas", interpret=True, block_n=16, block_v=16)
ATOMIC = dict(impl="pallas", interpret=True, block_n=16, block_v=16,
              kernel_config=KernelConfig(bwd_mode="atomic"))
XLA = dict(impl="xla", block_n=16, block_v=24)
IMPLS = {"two-pass": TWO_PASS, "atomic": ATOMIC, "xla": XLA}


def _tiles(kw, n, v):
    """(bn, bv) of the backward's tiles for the call options ``kw`` (blocks given explicitly)."""
    if kw["impl"] == "xla":
        return min(kw["block_n"], n), min(kw["block_v"], v)
    cfg = ops.resolve_config(n, v, 16, kw["block_n"], kw["block_v"], kw.get("kernel_config"))
    return cfg.bwd_block_n, cfg.bwd_block_v


def _order(e, c, where):
    """The implementation's catalog order (as its backward sees the inputs), checked against the
    float64 mean logits: a permutation, non-increasing up to float32 rounding."""
    e_in = jnp.where(where[:, None], e, jnp.zeros((), e.dtype))
    perm = np.asarray(reference.mean_logit_order(e_in, c.astype(e.dtype), where))
    v = c.shape[0]
    assert np.array_equal(np.sort(perm), np.arange(v))
    w = np.asarray(where)
    e64 = np.asarray(e.astype(jnp.float32), np.float64)[w]
    c64 = np.asarray(c.astype(e.dtype).astype(jnp.float32), np.float64)
    mean_logit = c64 @ (e64.mean(axis=0) if len(e64) else np.zeros(c64.shape[1]))
    slack = 1e-5 * (np.abs(c64) @ np.abs(e64).mean(axis=0) if len(e64) else 0.0) + 1e-12
    s = mean_logit[perm]
    assert np.all(s[1:] <= s[:-1] + np.maximum(slack[perm][1:], slack[perm][:-1]))
    return perm


def filtered_reference(e, c, t, where, g, perm, bn, bv, eps):
    """float64 keep mask [N, V] (original item order) of the filtered backward, with the tile
    maxima, plus ``reference_f64``'s outputs."""
    rows, dz, size, zmag, e64, c64 = reference_f64(e, c.astype(e.dtype), t, where)
    n, v = dz.shape
    err = np.abs(dz)[:, perm]  # dz is 0 on masked rows
    counted = g != 0
    keep_p = np.zeros((n, v), bool)
    maxima = []
    for i in range(0, n, bn):
        for j in range(0, v, bv):
            blk = err[i:i + bn, j:j + bv][counted[i:i + bn]]
            maxima.append(float(blk.max()) if blk.size else 0.0)
            keep_p[i:i + bn, j:j + bv] = eps is not None and maxima[-1] >= eps
    keep = np.empty_like(keep_p)
    keep[:, perm] = keep_p
    maxima = np.asarray(maxima)
    if eps is None:  # a probe: the caller picks eps from the tile maxima
        return maxima
    # No tile is decided by rounding: every maximum is clear of eps (0: all rows masked).
    assert np.all(np.abs(maxima - eps) > 1e-3 * eps), np.min(np.abs(maxima - eps)) / eps
    return dict(keep=keep, maxima=maxima, dz=dz, size=size, zmag=zmag, e64=e64, c64=c64,
                rows=rows)


def _eps_between(maxima):
    """An eps in (0, 1) that splits the tiles with rows that count near the median of their
    maxima, at the geometric middle of the widest gap between neighbouring maxima there."""
    m = np.unique(maxima[(maxima > 0) & (maxima < 1)])
    assert len(m) >= 4, m
    lo, hi = len(m) // 4, max(len(m) // 4 + 1, 3 * len(m) // 4)
    k = lo + int(np.argmax(m[lo + 1:hi + 1] / m[lo:hi]))
    return float(np.sqrt(m[k] * m[k + 1]))


def check_filtered(e, c, t, where, dtype_name, eps, kw, reduction="mean"):
    """Filtered loss/dE/dC vs the filtered float64 reference and the exact one (module doc).
    eps=None: chosen between the tile maxima (``_eps_between``). Returns the reference (keep
    mask, tile maxima, eps) and the outputs for extra assertions."""
    n, v = e.shape[0], c.shape[0]
    w = np.asarray(where)
    if reduction == "none":
        row_scale = _rng("cot", n).normal(size=n)
        ct = jnp.asarray(row_scale, jnp.float32)
    elif reduction == "sum":
        row_scale, ct = np.ones(n), jnp.float32(1.0)
    else:
        row_scale, ct = np.full(n, 1.0 / max(int(w.sum()), 1)), jnp.float32(1.0)
    g = np.where(w, row_scale, 0.0)
    perm = _order(e, c, where)
    bn, bv = _tiles(kw, n, v)
    if eps is None:
        eps = _eps_between(filtered_reference(e, c, t, where, g, perm, bn, bv, None))
    ref = filtered_reference(e, c, t, where, g, perm, bn, bv, eps)
    ref["eps"] = eps
    fn = lambda eps_: (lambda e_, c_: linear_cross_entropy(  # noqa: E731
        e_, c_, t, where=where, reduction=reduction, filter_eps=eps_, **kw))
    # Filtering changes the gradients only: the loss (by the forward rule) is the same bits as
    # the undifferentiated exact loss (the exact vjp may take the fused forward, whose sums run
    # in another order).
    assert np.array_equal(np.asarray(jax.vjp(fn(eps), e, c)[0]), np.asarray(fn(None)(e, c)))
    de, dc = jax.jit(lambda e_, c_: jax.vjp(fn(eps), e_, c_)[1](ct))(e, c)
    keep, dz, e64, c64 = ref["keep"], ref["dz"], ref["e64"], ref["c64"]
    assert de.dtype == e.dtype and dc.dtype == c.dtype
    gd = dz * g[:, None]
    rel = (np.abs(g) * (GRAD_RTOL[dtype_name] + 4 * EPS32 * ref["zmag"]))[:, None]
    wgt, wgt_kept, dropped = ref["size"] * rel, ref["size"] * rel * keep, np.abs(gd) * ~keep
    for got, kept, exact, mag, mag_all, drop, name in (
            (de, (gd * keep) @ c64, gd @ c64, wgt_kept @ np.abs(c64), wgt @ np.abs(c64),
             dropped @ np.abs(c64), "dE"),
            (dc, (gd * keep).T @ e64, gd.T @ e64, wgt_kept.T @ np.abs(e64), wgt.T @ np.abs(e64),
             dropped.T @ np.abs(e64), "dC")):
        got = np.asarray(got.astype(jnp.float32), np.float64)
        excess = np.abs(got - kept) - (mag + 1e-7)
        assert not np.any(excess > 0), f"{name} vs filtered ref: over by {excess.max():.3g}"
        excess = np.abs(got - exact) - (drop + mag_all + 1e-7)
        assert not np.any(excess > 0), f"{name} vs exact: over dropped by {excess.max():.3g}"
    if n:
        assert np.all(np.asarray(de.astype(jnp.float32))[~w] == 0.0)
    ref.update(de=np.asarray(de.astype(jnp.float32), np.float64),
               dc=np.asarray(dc.astype(jnp.float32), np.float64), perm=perm, bv=bv, g=g)
    return ref


# ---------------------------------------------------------------- default: the exact code path

@pytest.mark.parametrize("impl", ["xla", "two-pass"])
def test_filter_off_is_the_unfiltered_code_path(impl):
    # filter_eps=None traces no catalog ordering (no sort of V float keys; the default backward
    # sorts only the N integer targets) and fewer conds than the filtered backward, and gives the
    # same bits as a call without the argument. (At the commit that added filtering the None
    # results were also checked bit for bit against the previous commit's code.)
    kw = IMPLS[impl]
    e, c, t, where = make_inputs(_rng("off", impl), 37, 61, 16, jnp.bfloat16)

    def run(**extra):
        f = lambda e_, c_: linear_cross_entropy(e_, c_, t, where=where, **kw, **extra)  # noqa
        traced = jax.jit(jax.value_and_grad(f, (0, 1))).trace(e, c)
        return traced.lower().compile()(e, c), str(traced.jaxpr)

    (loss0, (de0, dc0)), jaxpr0 = run()
    (loss1, (de1, dc1)), jaxpr1 = run(filter_eps=None)
    _, jaxpr_f = run(filter_eps=1e-3)
    catalog_sort = re.compile(r"f32\[61\] \S+ = sort\[")  # mean logits of the 61 items
    assert jaxpr1 == jaxpr0 and not catalog_sort.search(jaxpr1) and catalog_sort.search(jaxpr_f)
    assert jaxpr1.count("cond[") < jaxpr_f.count("cond[")
    for a, b in ((loss0, loss1), (de0, de1), (dc0, dc1)):
        assert np.array_equal(np.asarray(a.astype(jnp.float32)), np.asarray(b.astype(jnp.float32)))


# ---------------------------------------------------------------- random ragged inputs

CASES = [("two-pass", "float32", "none"), ("two-pass", "bfloat16", "mean"),
         ("atomic", "bfloat16", "sum"), ("xla", "float32", "mean"), ("xla", "bfloat16", "none")]


@pytest.mark.parametrize("impl,dtype_name,reduction", CASES)
def test_filtered_matches_float64_filtered_reference(impl, dtype_name, reduction):
    rng = _rng("filter", impl, dtype_name, reduction)
    n, v, d = random_shape(rng, 48, 110, 24)
    e, c, t, where = make_inputs(rng, n, v, d, DTYPES[dtype_name])
    ref = check_filtered(e, c, t, where, dtype_name, None, IMPLS[impl], reduction)
    # Tiles both kept and skipped, so both branches ran.
    counted_tiles = ref["maxima"] > 0
    assert 0 < np.mean(ref["maxima"][counted_tiles] >= ref["eps"]) < 1


# The compiled Triton kernels (device only): larger ragged shapes, D a kernel-sized power of two.
IMPLS["gpu-two-pass"] = dict(impl="pallas", block_n=32, block_v=64)
IMPLS["gpu-atomic"] = dict(impl="pallas", block_n=32, block_v=64,
                           kernel_config=KernelConfig(bwd_mode="atomic"))


@pytest.mark.gpu
@pytest.mark.parametrize("impl,dtype_name,reduction,d", [
    ("gpu-two-pass", "bfloat16", "mean", 64), ("gpu-two-pass", "float32", "none", 128),
    ("gpu-atomic", "bfloat16", "sum", 128)])
def test_gpu_filtered_matches_float64_filtered_reference(impl, dtype_name, reduction, d):
    rng = _rng("gpu-filter", impl, dtype_name, reduction, d)
    n, v, _ = random_shape(rng, 300, 2500, 8)
    e, c, t, where = make_inputs(rng, n, v, d, DTYPES[dtype_name])
    ref = check_filtered(e, c, t, where, dtype_name, None, IMPLS[impl], reduction)
    counted_tiles = ref["maxima"] > 0
    assert 0 < np.mean(ref["maxima"][counted_tiles] >= ref["eps"]) < 1


@pytest.mark.parametrize("impl", ["two-pass", "xla"])
def test_tiny_eps_keeps_everything_and_round_trips_the_order(impl):
    # eps far below every probability keeps every tile: the gradients are the exact ones (the
    # ordered catalog only changes the summation order), dC in the original item order.
    rng = _rng("tiny", impl)
    e, c, t, where = make_inputs(rng, 29, 83, 16, jnp.float32, scale=3.0)
    ref = check_filtered(e, c, t, where, "float32", 1e-30, IMPLS[impl], "sum")
    assert ref["keep"][np.asarray(where)].all()
    perm = ref["perm"]
    assert not np.array_equal(perm, np.arange(len(perm)))  # the order is not the identity
    # One specific item (the one placed first by the order): its dC row, in its original place.
    item = int(perm[0])
    exact = (ref["dz"] * ref["g"][:, None]).T @ ref["e64"]
    np.testing.assert_allclose(ref["dc"][item], exact[item], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("impl,dtype_name", [("two-pass", "bfloat16"), ("atomic", "float32"),
                                             ("xla", "bfloat16")])
def test_peaked_model_skips_most_tiles(impl, dtype_name):
    # A "trained" model: item vectors of one norm, each counted row copies its target's vector,
    # scaled so that the softmax is nearly one-hot: |P - onehot| < eps almost everywhere.
    rng = _rng("peaked", impl, dtype_name)
    n, v, d = 41, 97, 16
    _, c, t, where = make_inputs(rng, n, v, d, jnp.float32)
    c = np.asarray(c) / np.linalg.norm(np.asarray(c), axis=1, keepdims=True) * 2.0
    t_np = np.where(np.asarray(where), np.asarray(t), 0)
    e = jnp.asarray(c[t_np] * 10.0, DTYPES[dtype_name])  # target logit 40, the others < 40 cos
    c = jnp.asarray(c, DTYPES[dtype_name])
    ref = check_filtered(e, c, t, where, dtype_name, 1e-3, IMPLS[impl])
    counted_tiles = ref["maxima"] > 0
    skipped = np.mean(ref["maxima"][counted_tiles] < 1e-3)
    assert skipped >= 0.8, skipped
    # Items in no kept tile get exactly zero dC.
    dead = ~ref["keep"].any(axis=0)
    assert dead.mean() >= 0.5 and np.all(ref["dc"][dead] == 0.0)


@pytest.mark.parametrize("impl", ["two-pass", "atomic", "xla"])
def test_fresh_model_keeps_only_tiles_with_targets(impl):
    # A fresh model: logits ~0, every probability ~1/V < eps. Every negative-only tile is
    # dropped; a tile is kept exactly when it holds a counted row's target (|P_t - 1| ~ 1).
    rng = _rng("fresh", impl)
    n, v, d = 21, 250, 16
    e, c, t, where = make_inputs(rng, n, v, d, jnp.bfloat16, scale=0.05)
    eps = 0.02
    ref = check_filtered(e, c, t, where, "bfloat16", eps, IMPLS[impl])
    assert ref["dz"].max() < eps  # every probability is below eps (targets: dz < 0)
    w, t_np, perm, bv = np.asarray(where), np.asarray(t), ref["perm"], ref["bv"]
    rank = np.argsort(perm)
    bn = _tiles(IMPLS[impl], n, v)[0]
    has_target = np.zeros_like(ref["keep"])
    for r in np.flatnonzero(w):
        i, j = r // bn, rank[t_np[r]] // bv
        cols = perm[j * bv:(j + 1) * bv]
        has_target[i * bn:(i + 1) * bn][:, cols] = True
    assert np.array_equal(ref["keep"], has_target)
    # Items whose ordered tile holds no target: their dC rows are exactly zero.
    dead = ~has_target.any(axis=0)
    assert dead.any() and np.all(ref["dc"][dead] == 0.0)
    assert not np.any(ref["dc"][t_np[w]] == 0.0)


def test_all_rows_masked_with_filtering():
    e, c, t, _ = make_inputs(_rng("filter-masked"), 19, 40, 16, jnp.float32)
    where = jnp.zeros(19, bool)
    for kw in (TWO_PASS, XLA):
        f = lambda e_, c_: linear_cross_entropy(e_, c_, t, where=where, filter_eps=1e-3, **kw)  # noqa
        loss, (de, dc) = jax.jit(jax.value_and_grad(f, (0, 1)))(e, c)
        assert float(loss) == 0.0 and not np.any(np.asarray(de)) and not np.any(np.asarray(dc))


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize("eps", [0.0, 1.0, -1e-3, 1.5, float("nan"), float("inf"), 1, True,
                                 "1e-3", np.float32(2.0)])
def test_bad_filter_eps_raises(eps):
    e, c, t, where = make_inputs(_rng("bad-eps"), 4, 6, 8, jnp.float32)
    with pytest.raises(ValueError, match=r"filter_eps=.*must be None .* or a Python float in \(0, 1\)"):
        linear_cross_entropy(e, c, t, where=where, filter_eps=eps)


def test_filter_eps_with_naive_raises():
    e, c, t, where = make_inputs(_rng("naive-eps"), 4, 6, 8, jnp.float32)
    with pytest.raises(ValueError, match="impl='naive'.*impl='xla' or 'pallas'"):
        linear_cross_entropy(e, c, t, where=where, impl="naive", filter_eps=1e-3)


# ---------------------------------------------------------------- Triton lowering (no GPU needed)

@pytest.mark.parametrize("bwd_mode", ["two_pass", "atomic"])
@pytest.mark.parametrize("filter_eps", [None, 1e-3])
def test_backward_lowers_for_cuda(bwd_mode, filter_eps):
    # Lowering for CUDA runs the Pallas -> Triton lowering of every kernel body (a cond Triton
    # cannot lower, e.g. on loop-index arithmetic, fails here), so this guards the filtered
    # kernels on machines without a GPU.
    rng = _rng("lower", bwd_mode, filter_eps)
    e = jnp.asarray(rng.normal(size=(256, 64)), jnp.bfloat16)
    c = jnp.asarray(rng.normal(size=(5000, 64)), jnp.bfloat16)
    t = jnp.asarray(rng.integers(0, 5000, 256), jnp.int32)
    w = jnp.asarray(rng.random(256) < 0.8)
    cfg = KernelConfig(bwd_mode=bwd_mode)
    f = jax.jit(jax.value_and_grad(lambda e_, c_: ops.pallas_row_losses(
        e_, c_, t, w, config=cfg, filter_eps=filter_eps).sum(), (0, 1)))
    text = lower_for_cuda(f.trace(e, c)).as_text()
    # Forward: the target-shifted kernel and its running-max fallback (two branches of a cond).
    assert text.count("__gpu$xla.gpu.triton") == 2 + (2 if bwd_mode == "two_pass" else 1)
