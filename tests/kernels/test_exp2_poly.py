"""The polynomial exponential (``common.exp2_poly``, the "polyK" exponential modes) and the
target-shift limit that goes with it.

CPU: the algorithm in plain jnp against float64 2^t; its PTX text; the mode rules; the redo
check. GPU (`gpu` marker): the PTX itself, per element position, against float64, and the
kernels with it end to end.

Tolerance: 2^f by a degree-5 float32 polynomial after exact range reduction is within 2.1e-7 of
2^t relatively (measured over 2M points of [-126, 127] when the coefficients were fitted); the
test allows 3e-7, MUFU ex2.approx's own bound being 2^-22 ~ 2.4e-7.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels import linear_cross_entropy
from pallas_kernels.cce import common, ops
from pallas_kernels.cce.common import KernelConfig
from tests.kernels.test_cce import (DTYPES, _far_above_target_inputs, _rng, check_case,
                                    make_inputs, random_shape)

POLY_RTOL = 3e-7


def _exp2_poly_f64(t):
    return np.asarray(common.exp2_poly(jnp.asarray(t, jnp.float32)), np.float64)


@pytest.mark.parametrize("lo,hi", [(-126.0, 127.0), (-3.0, 3.0), (-126.0, -100.0)])
def test_exp2_poly_matches_float64(lo, hi):
    rng = _rng("exp2-poly", lo, hi)
    t = rng.uniform(lo, hi, 200_000).astype(np.float32)
    # Also the points where the range reduction switches k: k +- 1/2 and just beside them.
    k = np.arange(np.ceil(lo), np.floor(hi)).astype(np.float32)
    half = np.concatenate([k + 0.5, np.nextafter(k + 0.5, np.float32(-np.inf)),
                           np.nextafter(k + 0.5, np.float32(np.inf)), k]).astype(np.float32)
    t = np.concatenate([t, half[(half >= lo) & (half <= hi)]])
    rel = np.abs(_exp2_poly_f64(t) / np.exp2(t.astype(np.float64)) - 1.0)
    assert rel.max() <= POLY_RTOL, float(rel.max())


def test_exp2_poly_clamps_out_of_range_and_reads_nan_as_overflow():
    t = np.array([-127.0, -150.0, -1e30, -np.inf, 127.0, 128.0, 200.0, 1e30, np.inf, np.nan],
                 np.float32)
    got = _exp2_poly_f64(t)
    assert np.all(np.isfinite(got)) and np.all(got > 0.0)
    low, high = got[:4], got[4:]
    assert np.all(low <= 2.0**-125)  # negligible against a sum that holds the target's 2^0
    # At or above 2^127: a target-shifted LSE that holds one is past SHIFT_LIMIT (redone).
    assert np.all(high >= 2.0**127 * (1 - POLY_RTOL)), high
    assert np.log(2.0**127 * (1 - POLY_RTOL)) > common.SHIFT_LIMIT


def test_poly_ptx_is_built_from_the_tested_coefficients():
    g = common.POLY_GROUP
    ptx = common._exp2_shifted_ptx(3)
    for c in common.EXP2_POLY:
        assert common._f32_ptx(c) in ptx
    assert ptx.count("ex2.approx") == g - 3 and ptx.count("shl.b32") == 3
    assert ptx.count("{") == ptx.count("}") == 1
    # Operands: results, then logits, then negated shifts, POLY_GROUP each; all used.
    for k in range(3 * g):
        assert f"${k}," in ptx or f"${k};" in ptx, k


@pytest.mark.parametrize("poly,tile,interpret,want", [
    (0, (64, 128, 4), False, "fma"),
    (1, (64, 128, 4), False, "poly1"),
    (8, (64, 64, 4), False, "poly8"),
    (2, (32, 16, 4), False, "fma"),  # 4 exponentials per thread: the PTX takes 8
    (2, (64, 128, 4), True, "xla"),  # the interpreter has no PTX
])
def test_exp_mode_rules(poly, tile, interpret, want):
    assert common.exp_mode(common.default_config(4096, 10_000, 64), interpret, poly, tile) == want


def test_exp_poly_out_of_range_is_refused():
    with pytest.raises(ValueError, match="exp_poly=9"):
        common.exp_mode(common.default_config(4096, 10_000, 64), True, 9, (64, 128, 4))


def test_within_limit_flags_rows_past_the_shift_limit():
    z_t = jnp.array([0.0, 10.0, -5.0, 1.0])
    for bad, ok in [(79.0, True), (80.5, False), (np.inf, False), (np.nan, False)]:
        lse = z_t + jnp.array([1.0, 2.0, bad, 0.5])
        assert bool(ops._within_limit(lse, z_t)) is ok, bad


@pytest.mark.parametrize("far", [True, False])
def test_rows_between_limit_and_overflow_are_redone(monkeypatch, far):
    # far: a logit ~84 above four rows' targets. The target-shifted sum (2^121) stays finite,
    # but those rows are past SHIFT_LIMIT, so the batch must be redone with the running max
    # (tagged +1000 here to see which branch ran). Otherwise it must not be.
    from pallas_kernels.cce import reference

    rng = _rng("limit", far)
    e, c, t, where = make_inputs(rng, 21, 37, 16, jnp.float32)
    e = e.at[:4, 0].set(8.0).at[:4, 1:].set(0.0)
    c = c.at[:, 0].set(0.0).at[5, 0].set(10.5 if far else 1.0)  # item 5: logit 84 for rows 0-3
    t = t.at[:4].set(6)
    where = where.at[:4].set(True)
    real = ops._lse

    def tagged(embeddings, classifier, chunks, interpret, shift=None):
        out = real(embeddings, classifier, chunks, interpret, shift)
        return out if shift is not None else out + 1000.0

    monkeypatch.setattr(ops, "_lse", tagged)
    cfg = ops.resolve_config(21, 37, 16, 16, 16)
    z_t = reference.target_logits(e, c, t, where)
    lse = np.asarray(ops._lse_by_target(e, c, z_t, ops._as_chunks(cfg, 37, 16), True))
    gap = float(np.max((lse - np.asarray(z_t))[:4])) - (1000.0 if far else 0.0)
    if far:
        assert common.SHIFT_LIMIT < gap < np.log(np.finfo(np.float32).max)
        assert np.all(lse > 500.0)
    else:
        assert np.all(lse < 500.0) and gap < common.SHIFT_LIMIT
    monkeypatch.setattr(ops, "_lse", real)
    check_case(e, c, t, where, "none", "pallas", "float32", interpret=True, block_n=16,
               block_v=16)


# ---------------------------------------------------------------- GPU: the PTX and the kernels

@pytest.mark.gpu
@pytest.mark.parametrize("poly", [1, 3, 8])
def test_gpu_poly_exponentials_match_float64(poly):
    # Every element position of the POLY_GROUP-element PTX: positions < poly take the polynomial, the
    # rest the MUFU; both within their bound plus the FMA argument's rounding.
    from jax.experimental import pallas as pl

    rng = _rng("gpu-poly", poly)
    x = rng.uniform(-120.0, 60.0, (64, 256)).astype(np.float32)
    shift = rng.uniform(-30.0, 80.0, (64,)).astype(np.float32)

    def kernel(x_ref, s_ref, o_ref):
        o_ref[...] = common.exp2_shifted(x_ref[...], s_ref[...][:, None], f"poly{poly}")

    def run(x_):
        return np.asarray(pl.pallas_call(
            kernel, out_shape=jax.ShapeDtypeStruct(x.shape, jnp.float32))(x_, shift), np.float64)

    got = run(x)
    t = x.astype(np.float64) * np.log2(np.e) - shift.astype(np.float64)[:, None]
    normal = t > -125.0
    rel = np.abs(got / np.exp2(t) - 1.0)
    tol = 2.0**-21 + np.log(2.0) * 2.0**-23 * (np.abs(x) + np.abs(t))
    assert np.all(rel[normal] <= tol[normal]), float(np.max(rel[normal] / tol[normal]))
    assert np.all(got[~normal] <= 2.0**-124)
    # NaN logits: the MUFU keeps NaN, the polynomial reads 2^127 (both make the row "redo");
    # exactly poly of every POLY_GROUP elements take the polynomial.
    got = run(np.full_like(x, np.nan))
    poly_out = ~np.isnan(got)
    assert np.all(got[poly_out] >= 2.0**127 * (1 - POLY_RTOL))
    assert np.sum(poly_out) == x.size * poly // common.POLY_GROUP


GPU_POLY_CASES = [
    (d, dt, red, cfg)
    for d in (64, 128) for dt, red in [("float32", "none"), ("bfloat16", "mean")]
    for cfg in (KernelConfig(exp_poly=1, bwd_exp_poly=1),
                KernelConfig(exp_poly=8, bwd_exp_poly=3, fused_de=False, fwd_impl="triton"))]


@pytest.mark.gpu
@pytest.mark.parametrize("d,dtype_name,reduction,cfg", GPU_POLY_CASES)
def test_gpu_poly_kernels_match_float64(d, dtype_name, reduction, cfg):
    rng = _rng("gpu-poly-kernels", d, dtype_name, cfg.exp_poly)
    n, v, _ = random_shape(rng, 1500, 9000, 8)
    e, c, t, where = make_inputs(rng, n, v, d, DTYPES[dtype_name])
    check_case(e, c, t, where, reduction, "pallas", dtype_name, kernel_config=cfg)


@pytest.mark.gpu
@pytest.mark.parametrize("fused", [False, True])
def test_gpu_poly_overflow_rows_are_redone(fused):
    # Logits ~100 above the target: the polynomial clamps (no inf), the limit check redoes them.
    rng = _rng("gpu-poly-overflow", fused)
    e, c, t, where = _far_above_target_inputs(rng, 700, 3001, 64, jnp.bfloat16)
    check_case(e, c, t, where, "none", "pallas", "bfloat16",
               kernel_config=KernelConfig(exp_poly=8, bwd_exp_poly=8, fused_de=fused))


@pytest.mark.gpu
def test_gpu_poly_nan_classifier_row_gives_nan_loss():
    rng = _rng("gpu-poly-nan")
    e, c, t, where = make_inputs(rng, 600, 2000, 64, jnp.bfloat16)
    c = c.at[777].set(jnp.nan)
    loss = linear_cross_entropy(e, c, t, where=where, impl="pallas",
                                kernel_config=KernelConfig(exp_poly=8))
    assert np.isnan(float(loss))
