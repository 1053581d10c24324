"""linear_cross_entropy (and its _fwd / _bwd halves) vs a float64 numpy softmax reference.

CPU: impl="naive", "xla" and "interpret" (the Pallas kernels in the interpreter, tiny shapes).
The same checks run with the `gpu` marker on the device for impl="pallas" (compiled Triton
kernels, larger shapes).

Tolerances (stated once, used everywhere). The reference gets the *same* (dtype-rounded) inputs in
float64, so what remains is the float32 accumulation and, for bf16, the cast of G = softmax -
onehot to bf16 before the two gradient GEMMs and of the gradients themselves to bf16:
  loss : |err| <= LOSS_RTOL[dtype] * max(1, |ref|) + sum_r |g_r| 8 eps32 (|lse_r| + max_j |z_rj|)
         (per row for "none"): float32 rounding of logits of size |z| cancels in lse - z_t
  grads: |err| <= W @ |C| (dE) and W^T @ |E| (dC), elementwise, with
         W_rj = |g_r| * (P_rj + onehot_rj) * (GRAD_RTOL[dtype] + 4 eps32 (|lse_r| + max_j |z_rj|)):
         the standard bound for dot products whose operands and result are rounded, where the
         softmax term and the target term may be rounded separately (bf16: 2^-9 for G and 2^-9
         for the output, so 2^-7 leaves 2x headroom) plus float32 rounding of the logits.
"""

from __future__ import annotations

import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels import (
    CCEConfig,
    linear_cross_entropy,
    linear_cross_entropy_bwd,
    linear_cross_entropy_fwd,
)

LOSS_RTOL = {"float32": 2e-5, "bfloat16": 2e-4}
GRAD_RTOL = {"float32": 1e-5, "bfloat16": 2.0 ** -7}
EPS32 = float(np.finfo(np.float32).eps)
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _rng(*key) -> np.random.Generator:
    # Fresh but reproducible per test case: the seed comes from the test's parameters.
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def make_inputs(rng, n, v, d, dtype, *, scale=1.0, mask_frac=0.3):
    """Random E [n, d], C [v, d] (dtype), targets (garbage on masked rows), where bool[n]."""
    e = rng.normal(size=(n, d)) * scale / d ** 0.25
    c = rng.normal(size=(v, d)) * scale / d ** 0.25
    # Peaked rows: a few embeddings copy their target's item vector (large target logits).
    t = rng.integers(0, v, n)
    peaked = rng.random(n) < 0.2
    e[peaked] = c[t[peaked]] * 2.0
    where = rng.random(n) >= mask_frac
    t_garbage = np.where(rng.random(n) < 0.5, -1, v + 7)
    t = np.where(where, t, t_garbage).astype(np.int32)
    e = jnp.asarray(e, dtype)
    c = jnp.asarray(c, dtype)
    return e, c, jnp.asarray(t), jnp.asarray(where)


def reference_f64(e, c, t, where):
    """float64 per-row losses, P - onehot, P + onehot (masked rows 0), E, C, per-row logit size."""
    e64 = np.asarray(e.astype(jnp.float32), np.float64)
    c64 = np.asarray(c.astype(jnp.float32), np.float64)
    w = np.asarray(where)
    t = np.where(w, np.asarray(t), 0)
    z = e64 @ c64.T
    m = z.max(axis=1, keepdims=True)
    p = np.exp(z - m)
    s = p.sum(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(s[:, 0])
    rows = np.where(w, lse - z[np.arange(len(t)), t], 0.0)
    p = p / s
    onehot = np.zeros_like(p)
    onehot[np.arange(len(t)), t] = 1.0
    dz = np.where(w[:, None], p - onehot, 0.0)
    size = np.where(w[:, None], p + onehot, 0.0)
    zmag = np.abs(lse) + np.abs(z).max(axis=1)
    return rows, dz, size, zmag, e64, c64


def _split_vjp(e, c, t, where, reduction, impl, config):
    """(loss, vjp) from linear_cross_entropy_fwd and _bwd: the plain forward, then the dE and dC
    kernels given its log-sum-exp (the loss itself runs the one-pass forward and dC only)."""
    rows, lse = linear_cross_entropy_fwd(e, c, t, where=where, impl=impl, config=config)
    w = np.asarray(where)
    scale = {"none": None, "sum": 1.0, "mean": 1.0 / max(int(w.sum()), 1)}[reduction]
    out = rows if reduction == "none" else jnp.sum(rows) * (scale if reduction == "mean" else 1.0)

    def vjp(ct):
        d_rows = ct if reduction == "none" else jnp.full(rows.shape, ct * scale, jnp.float32)
        return linear_cross_entropy_bwd(e, c, t, lse, d_rows, where=where, impl=impl,
                                        config=config)

    return out, vjp


def check_case(e, c, t, where, reduction, impl, dtype_name, config=None, *, split=False):
    """Loss and gradients within the tolerances of the module docstring. ``split``: through
    linear_cross_entropy_fwd / _bwd instead of the loss."""
    rows_ref, dz, size, zmag, e64, c64 = reference_f64(e, c, t, where)
    w = np.asarray(where)
    n = len(w)
    fn = lambda e_, c_: linear_cross_entropy(
        e_, c_, t, where=where, reduction=reduction, impl=impl, config=config)
    out, vjp = _split_vjp(e, c, t, where, reduction, impl, config) if split else jax.vjp(fn, e, c)
    assert out.dtype == jnp.float32
    if reduction == "none":
        cot = _rng("cot", n).normal(size=n)
        loss_ref, row_scale = rows_ref, cot
        ct = jnp.asarray(cot, jnp.float32)
    elif reduction == "sum":
        loss_ref, row_scale = rows_ref.sum(), np.ones(n)
        ct = jnp.float32(1.0)
    else:
        cnt = max(int(w.sum()), 1)
        loss_ref, row_scale = rows_ref.sum() / cnt, np.full(n, 1.0 / cnt)
        ct = jnp.float32(1.0)
    out64 = np.asarray(out, np.float64)
    logit_err = 8 * EPS32 * zmag * np.abs(row_scale) * w
    logit_err = logit_err if reduction == "none" else logit_err.sum()
    tol = LOSS_RTOL[dtype_name] * np.maximum(1.0, np.abs(loss_ref)) + logit_err
    assert np.all(np.abs(out64 - loss_ref) <= tol), (np.abs(out64 - loss_ref).max(), tol)
    if reduction == "none":
        assert np.all(out64[~w] == 0.0)

    de, dc = vjp(ct)
    assert de.dtype == e.dtype and dc.dtype == c.dtype
    g = dz * row_scale[:, None]
    wgt = size * (np.abs(row_scale) * (GRAD_RTOL[dtype_name] + 4 * EPS32 * zmag))[:, None]
    for got, ref, mag, name in ((de, g @ c64, wgt @ np.abs(c64), "dE"),
                                (dc, g.T @ e64, wgt.T @ np.abs(e64), "dC")):
        got = np.asarray(got.astype(jnp.float32), np.float64)
        excess = np.abs(got - ref) - (mag + 1e-7)
        assert not np.any(excess > 0), f"{name}: error over the bound by {excess.max():.3g}"
    if n:
        # Masked rows get exactly zero embedding gradient.
        assert np.all(np.asarray(de.astype(jnp.float32))[~w] == 0.0)


def random_shape(rng, max_n, max_v, max_d):
    # Ragged: never multiples of the (power-of-two) blocks, except by chance.
    return (int(rng.integers(max_n // 2, max_n)) | 1, int(rng.integers(max_v // 2, max_v)) | 1,
            int(rng.integers(max_d // 2, max_d)) | 1)


# ---------------------------------------------------------------- CPU: naive / xla

# Every reduction x dtype on the default chunked path; the naive path and tiny blocks (several
# row and catalog blocks, ragged last ones) on a subset, to keep the file fast on a shared CPU.
CPU_CASES = (
    [("xla", None, dt, red) for dt in ("float32", "bfloat16") for red in ("mean", "sum", "none")]
    + [("naive", None, dt, "mean") for dt in ("float32", "bfloat16")]
    + [("xla", CCEConfig(block_n=16, block_v=32), "bfloat16", "mean"),
       ("xla", CCEConfig(block_n=16, block_v=32), "float32", "none")]
)


@pytest.mark.parametrize("impl,config,dtype_name,reduction", CPU_CASES)
def test_matches_float64_reference(impl, config, dtype_name, reduction):
    rng = _rng(impl, config, dtype_name, reduction)
    n, v, d = random_shape(rng, 90, 150, 40)
    e, c, t, where = make_inputs(rng, n, v, d, DTYPES[dtype_name])
    check_case(e, c, t, where, reduction, impl, dtype_name, config)


@pytest.mark.parametrize("dtype_name,reduction", [("float32", "none"), ("bfloat16", "mean")])
def test_xla_fwd_and_bwd_match_float64_reference(dtype_name, reduction):
    rng = _rng("xla-split", dtype_name, reduction)
    n, v, d = random_shape(rng, 60, 120, 24)
    e, c, t, where = make_inputs(rng, n, v, d, DTYPES[dtype_name])
    check_case(e, c, t, where, reduction, "xla", dtype_name, CCEConfig(block_n=16, block_v=32),
               split=True)


# ---------------------------------------------------------------- CPU: Pallas in the interpreter

TILES = CCEConfig(block_n=16, block_v=16)
# Catalog split over programs (the one-pass forward's partial sums and accs are added).
SPLIT = CCEConfig(block_n=16, block_v=16, num_splits=2)
# Forward tiles unlike the backward's (the rows are padded to the larger row tile).
FWD_TILES = CCEConfig(block_n=16, block_v=16, fwd_block_n=32, fwd_block_v=32)
PALLAS_CPU = (
    [("loss", TILES, dt, red, False) for dt in ("float32", "bfloat16")
     for red in ("mean", "sum", "none")]
    + [("split-2", SPLIT, "bfloat16", "mean", False), ("split-2", SPLIT, "float32", "none", False)]
    # linear_cross_entropy_fwd / _bwd: the plain forward, and the dE kernel given its lse.
    + [("fwd-bwd", TILES, "bfloat16", "sum", True), ("fwd-bwd", TILES, "float32", "none", True),
       ("fwd-bwd-split-2", SPLIT, "float32", "mean", True),
       ("fwd-tiles", FWD_TILES, "bfloat16", "mean", True)]
)


@pytest.mark.parametrize("name,config,dtype_name,reduction,split", PALLAS_CPU)
def test_pallas_interpret_matches_float64_reference(name, config, dtype_name, reduction, split):
    rng = _rng("pallas", name, dtype_name, reduction)
    n, v, d = random_shape(rng, 48, 90, 24)
    e, c, t, where = make_inputs(rng, n, v, d, DTYPES[dtype_name])
    check_case(e, c, t, where, reduction, "interpret", dtype_name, config, split=split)


@pytest.mark.parametrize("dtype_name", ["float32", "bfloat16"])
def test_pallas_interpret_edge_cases(dtype_name):
    dtype = DTYPES[dtype_name]
    rng = _rng("pallas-edge", dtype_name)
    # Overflowing logits, a catalog smaller than one tile, V = 1, and every row masked.
    e, c, t, where = make_inputs(rng, 19, 37, 16, dtype, scale=12.0)
    check_case(e, c, t, where, "mean", "interpret", dtype_name, CCEConfig(block_v=16))
    e, c, t, where = make_inputs(rng, 11, 5, 8, dtype)
    check_case(e, c, t, where, "sum", "interpret", dtype_name)
    e, c, t, where = make_inputs(rng, 9, 1, 8, dtype)
    check_case(e, c, t, where, "mean", "interpret", dtype_name)
    where = jnp.zeros(9, bool)
    fn = lambda e_, c_: linear_cross_entropy(e_, c_, t, where=where, impl="interpret")
    loss, (de, dc) = jax.value_and_grad(fn, (0, 1))(e, c)
    assert float(loss) == 0.0 and not np.any(np.asarray(de)) and not np.any(np.asarray(dc))


def _far_above_target_inputs(rng, n, v, d, dtype):
    """Inputs where some rows have a logit ~100 above their target's: the target-shifted sum
    overflows there (2^144 > float32 max), so the forward must fall back to the running max."""
    e, c, t, where = make_inputs(rng, n, v, d, dtype)
    e = e.at[: n // 2, 0].set(10.0)
    c = c.at[:, 0].set(0.0).at[v // 2, 0].set(10.0)  # item v/2: logit ~100 for the first rows
    t = t.at[: n // 2].set((v // 2 + 1) % v)
    return e, c, t, where


@pytest.mark.parametrize("dtype_name,split", [("float32", False), ("bfloat16", False),
                                              ("float32", True), ("bfloat16", True)])
def test_target_shift_overflow_falls_back_to_running_max(dtype_name, split):
    from pallas_kernels.cce import forward, ops

    rng = _rng("overflow", dtype_name, split)
    e, c, t, where = _far_above_target_inputs(rng, 21, 37, 16, DTYPES[dtype_name])
    # The shifted kernel alone does overflow on these rows (so the fallback is exercised) ...
    cfg = ops.resolve_plan(21, 37, 16, jnp.dtype(DTYPES[dtype_name]).itemsize, TILES)
    z_t = np.asarray(e, np.float32) @ np.asarray(c, np.float32).T
    t_safe = np.where(np.asarray(where), np.asarray(t), 0)  # masked rows may hold junk labels
    shift = jnp.asarray(np.where(np.asarray(where), z_t[np.arange(21), t_safe], 0.0))
    e_pad = jnp.pad(e, ((0, 32 - 21), (0, 0)))
    lse = forward.lse_rows(e_pad, c, 37, cfg, interpret=True,
                           shift=jnp.pad(shift, (0, 32 - 21)))
    assert not np.all(np.isfinite(np.asarray(lse)[:21]))
    # ... and the loss and gradients still match float64 (the loss: the one-pass forward falls
    # back to the running max and the softmax-mean kernel; split: the plain forward falls back).
    check_case(e, c, t, where, "none", "interpret", dtype_name, TILES, split=split)


# ---------------------------------------------------------------- GPU: compiled Triton kernels

@pytest.mark.gpu
@pytest.mark.parametrize("dtype_name", ["float32", "bfloat16"])
def test_gpu_pallas_edge_cases(dtype_name):
    dtype = DTYPES[dtype_name]
    rng = _rng("gpu-edge", dtype_name)
    e, c, t, where = make_inputs(rng, 700, 3001, 64, dtype, scale=12.0)
    check_case(e, c, t, where, "sum", "pallas", dtype_name)
    e, c, t, where = make_inputs(rng, 300, 1, 128, dtype)
    check_case(e, c, t, where, "mean", "pallas", dtype_name)
    where = jnp.zeros(300, bool)
    fn = lambda e_, c_: linear_cross_entropy(e_, c_, t, where=where, impl="pallas")
    loss, (de, dc) = jax.value_and_grad(fn, (0, 1))(e, c)
    assert float(loss) == 0.0 and not np.any(np.asarray(de)) and not np.any(np.asarray(dc))


# Default kernels at every D and dtype; catalog splits and the fwd / bwd halves on a subset
# (device time is scarce). D = 45 exercises the padding of D to a power of two.
_DT = [("float32", "none"), ("bfloat16", "mean")]
GPU_CASES = (
    [("default", None, d, dt, red, False) for d in (64, 128, 256, 45) for dt, red in _DT]
    + [("split-4", CCEConfig(num_splits=4), d, "bfloat16", "mean", False) for d in (64, 128, 256)]
    + [("fwd-bwd", None, d, dt, red, True) for d in (64, 128) for dt, red in _DT]
    + [("fwd-bwd-split-4", CCEConfig(num_splits=4), 256, "bfloat16", "mean", True)]
)


@pytest.mark.gpu
def test_gpu_exp2_shifted_matches_float64():
    # The kernels' exponential 2^(x log2 e - shift): one FMA + ex2.approx ("fma", the default) or
    # a rounded product, a rounded difference, then ex2 ("ex2"). Both within ex2.approx's
    # 2^-21 plus the argument's roundings; the FMA, with one rounding fewer, is more accurate.
    from jax.experimental import pallas as pl

    from pallas_kernels.cce import common
    rng = _rng("gpu-exp2")
    x = rng.uniform(-120.0, 60.0, (64, 256)).astype(np.float32)
    shift = rng.uniform(-30.0, 80.0, (64,)).astype(np.float32)
    t = x.astype(np.float64) * np.log2(np.e) - shift.astype(np.float64)[:, None]
    normal = t > -125.0
    errors = {}
    for mode in ("fma", "ex2"):
        def kernel(x_ref, s_ref, o_ref):
            o_ref[...] = common.exp2_shifted(x_ref[...], s_ref[...][:, None], mode)
        got = np.asarray(pl.pallas_call(
            kernel, out_shape=jax.ShapeDtypeStruct(x.shape, jnp.float32))(x, shift), np.float64)
        rel = np.abs(got / np.exp2(t) - 1.0)
        tol = 2.0**-21 + np.log(2.0) * 2.0**-23 * (2.0 * np.abs(x) + np.abs(t))
        assert np.all(rel[normal] <= tol[normal]), (mode, float(np.max(rel[normal] / tol[normal])))
        assert np.all(got[~normal] <= 2.0**-124), mode  # underflow: flushed to zero (ftz)
        errors[mode] = float(np.mean(rel[normal]))
    assert errors["fma"] < errors["ex2"], errors


@pytest.mark.gpu
@pytest.mark.parametrize("dtype_name,split", [("float32", True), ("bfloat16", False)])
def test_gpu_target_shift_overflow_falls_back(dtype_name, split):
    rng = _rng("gpu-overflow", dtype_name)
    e, c, t, where = _far_above_target_inputs(rng, 700, 3001, 64, DTYPES[dtype_name])
    check_case(e, c, t, where, "none", "pallas", dtype_name, split=split)


@pytest.mark.gpu
@pytest.mark.parametrize("name,cfg,d,dtype_name,reduction,split", GPU_CASES)
def test_gpu_pallas_matches_float64_reference(name, cfg, d, dtype_name, reduction, split):
    rng = _rng("gpu", name, dtype_name, reduction, d)
    n, v, _ = random_shape(rng, 1500, 9000, 8)
    e, c, t, where = make_inputs(rng, n, v, d, DTYPES[dtype_name])
    check_case(e, c, t, where, reduction, "pallas", dtype_name, cfg, split=split)


@pytest.mark.parametrize("dtype_name", ["float32", "bfloat16"])
def test_overflowing_logits(dtype_name):
    # Logits of several hundred: exp overflows float32 without the running max.
    rng = _rng("overflow", dtype_name)
    e, c, t, where = make_inputs(rng, 33, 71, 17, DTYPES[dtype_name], scale=12.0)
    z = np.asarray(e.astype(jnp.float32)) @ np.asarray(c.astype(jnp.float32)).T
    assert np.abs(z).max() > 100.0
    check_case(e, c, t, where, "mean", "xla", dtype_name, CCEConfig(block_n=8, block_v=16))


@pytest.mark.parametrize("impl", ["xla"])
def test_all_rows_masked_gives_zero(impl):
    rng = _rng("allmasked", impl)
    e, c, t, _ = make_inputs(rng, 21, 40, 12, jnp.float32)
    where = jnp.zeros(21, bool)
    for reduction in ("mean", "sum"):
        fn = lambda e_, c_: linear_cross_entropy(e_, c_, t, where=where, reduction=reduction, impl=impl)
        loss, (de, dc) = jax.value_and_grad(fn, (0, 1))(e, c)
        assert float(loss) == 0.0
        assert not np.any(np.asarray(de)) and not np.any(np.asarray(dc))


@pytest.mark.parametrize("impl", ["xla"])
def test_single_item_catalog(impl):
    # V = 1: the loss is exactly 0 and so are the gradients.
    rng = _rng("v1", impl)
    e, c, t, where = make_inputs(rng, 13, 1, 9, jnp.float32)
    check_case(e, c, t, where, "mean", impl, "float32")
    assert abs(float(linear_cross_entropy(e, c, t, where=where, impl=impl))) <= 1e-6


@pytest.mark.parametrize("impl,config", [("xla", None), ("interpret", CCEConfig(block_v=16))])
def test_jit_and_mixed_dtypes(impl, config):
    # bf16 embeddings with a float32 table (mixed-precision training), targets and mask traced
    # under jit: the compute runs in bf16 with f32 accumulation; each gradient comes back in its
    # input's dtype.
    rng = _rng("mixed", impl)
    e, c, t, where = make_inputs(rng, 40, 64, 16, jnp.float32)
    e16 = e.astype(jnp.bfloat16)
    fn = jax.jit(jax.value_and_grad(
        lambda e_, c_, t_, w_: linear_cross_entropy(e_, c_, t_, where=w_, impl=impl,
                                                    config=config), (0, 1)))
    loss, (de, dc) = fn(e16, c, t, where)
    assert de.dtype == jnp.bfloat16 and dc.dtype == jnp.float32
    ref = linear_cross_entropy(e16, c.astype(jnp.bfloat16), t, where=where, impl="naive")
    assert abs(float(loss) - float(ref)) <= 2e-4 * max(1.0, abs(float(ref)))


def test_empty_batch():
    e = jnp.zeros((0, 8), jnp.float32)
    c = jnp.ones((5, 8), jnp.float32)
    t = jnp.zeros((0,), jnp.int32)
    assert float(linear_cross_entropy(e, c, t)) == 0.0
    assert linear_cross_entropy(e, c, t, reduction="none").shape == (0,)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(e_shape=(4, 8, 2)), "flatten"),
        (dict(c_shape=(6, 7)), "D=8"),
        (dict(t=[0, 1, 2, 6]), r"outside \[0, 6\)"),
        (dict(t=[0, 1, 2, -1]), "outside"),
        (dict(t_dtype=np.float32), "integer"),
        (dict(t=[0, 1, 2]), "shape"),
        (dict(where=[True, False, True, True], where_dtype=np.int32), "bool"),
        (dict(reduction="avg"), "reduction"),
        (dict(impl="cuda"), "impl"),
        (dict(e_dtype=np.int32), "dtype"),
        (dict(config=dict(block_v=0)), "block_v"),
        (dict(config=dict(block_v=48)), "power of two"),
        (dict(config=dict(fwd_impl="cuda")), "fwd_impl"),
        (dict(config="tiles"), "CCEConfig"),
        (dict(impl="naive", vocab_parallel="mesh"), "VocabParallelOptions"),
    ],
)
def test_bad_input_raises(kwargs, match):
    e = np.zeros(kwargs.pop("e_shape", (4, 8)), kwargs.pop("e_dtype", np.float32))
    c = np.zeros(kwargs.pop("c_shape", (6, 8)), np.float32)
    t = np.asarray(kwargs.pop("t", [0, 1, 2, 5]), kwargs.pop("t_dtype", np.int32))
    if "where" in kwargs:
        kwargs["where"] = jnp.asarray(kwargs.pop("where"), kwargs.pop("where_dtype"))
    with pytest.raises(ValueError, match=match):
        if isinstance(kwargs.get("config"), dict):
            kwargs["config"] = CCEConfig(**kwargs["config"])
        linear_cross_entropy(e, c, t, **kwargs)


@pytest.mark.parametrize("impl,config", [("xla", None), ("interpret", CCEConfig(block_v=16))])
def test_masked_rows_may_hold_non_finite_embeddings(impl, config):
    # Padding rows may carry anything (NaN, inf); results equal those with zeroed padding.
    e, c, t, where = make_inputs(_rng("nan", impl), 23, 41, 16, jnp.float32)
    w = np.asarray(where)
    bad = np.asarray(e).copy()
    bad[~w] = np.where(np.arange(16) % 2, np.nan, np.inf)
    fn = lambda e_, c_: linear_cross_entropy(e_, c_, t, where=where, impl=impl, config=config)
    loss_bad, (de_bad, dc_bad) = jax.value_and_grad(fn, (0, 1))(jnp.asarray(bad), c)
    clean = jnp.where(where[:, None], e, 0.0)
    loss, (de, dc) = jax.value_and_grad(fn, (0, 1))(clean, c)
    assert np.isfinite(float(loss_bad)) and float(loss_bad) == float(loss)
    np.testing.assert_array_equal(np.asarray(de_bad), np.asarray(de))
    np.testing.assert_array_equal(np.asarray(dc_bad), np.asarray(dc))


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="checks the CPU-only error")
def test_pallas_without_gpu_or_interpreter_is_refused():
    e, c, t, where = make_inputs(_rng("nogpu"), 4, 6, 8, jnp.float32)
    with pytest.raises(ValueError, match="impl='interpret'"):
        linear_cross_entropy(e, c, t, where=where, impl="pallas")


def test_tables_past_32_bit_offsets_are_cut_into_chunks():
    # Shape-only check (no data is touched): 2^25 rows x 64 = 2^31 elements (10M items at D = 256
    # are past it too) runs as two launches, each below 2^31 elements.
    from pallas_kernels.cce import ops

    assert ops.catalog_chunks(2**25, 64) == ((0, 2**24), (2**24, 2**25))
    assert all((hi - lo) * 256 < 2**31 for lo, hi in ops.catalog_chunks(10**7, 256))
    e = jax.ShapeDtypeStruct((8, 64), jnp.bfloat16)
    c = jax.ShapeDtypeStruct((2**25, 64), jnp.bfloat16)
    t = jax.ShapeDtypeStruct((8,), jnp.int32)
    fn = lambda e_, c_, t_: linear_cross_entropy(e_, c_, t_, impl="interpret")
    assert jax.eval_shape(fn, e, c, t).shape == ()


@pytest.mark.parametrize("dtype_name,reduction,split", [("float32", "mean", True),
                                                        ("bfloat16", "none", True),
                                                        ("bfloat16", "mean", False)])
def test_chunked_catalog_matches_float64_reference(dtype_name, reduction, split):
    # Cap the chunk so that a tiny ragged catalog is cut into 3-5 uneven chunks (as V x D past
    # 2^31 is); the merged log-sum-exp and the per-chunk gradients must equal the reference.
    from pallas_kernels.cce import ops

    rng = _rng("chunks", dtype_name, reduction)
    n, v, d = int(rng.integers(9, 40)), int(rng.integers(70, 140)), 16
    rows = int(rng.integers(v // 5 + 1, v // 3))
    assert 3 <= len(ops.catalog_chunks(v, d, rows)) <= 5
    e, c, t, where = make_inputs(rng, n, v, d, DTYPES[dtype_name])
    check_case(e, c, t, where, reduction, "interpret", dtype_name,
               CCEConfig(block_v=16, max_chunk_rows=rows), split=split)


@pytest.mark.parametrize("split", [False, True])
def test_restarted_accumulation_chains_match_float64_reference(monkeypatch, split):
    # Tiny chains (2-3 tiles) so that the restarted MMA chains of the backward (and of the
    # one-pass forward's acc), their remainder and the ragged tail all occur at interpreter
    # sizes; the sum must still equal the reference.
    from pallas_kernels.cce import common

    rng = _rng("chains", split)
    monkeypatch.setattr(common, "SINGLE_CHAIN_ITEMS", 0)
    monkeypatch.setattr(common, "CHAIN_ITEMS", int(rng.choice([32, 48])))
    n, v = int(rng.integers(40, 90)), int(rng.integers(150, 260))
    e, c, t, where = make_inputs(rng, n, v, 16, jnp.float32)
    check_case(e, c, t, where, "mean", "interpret", "float32",
               CCEConfig(block_n=16, block_v=16, num_splits=2), split=split)


def test_masked_rows_may_hold_out_of_range_targets():
    e, c, t, _ = make_inputs(_rng("oor"), 4, 6, 8, jnp.float32)
    t = jnp.asarray([0, 10**6, 2, -5], jnp.int32)
    where = jnp.asarray([True, False, True, False])
    loss = linear_cross_entropy(e, c, t, where=where, impl="xla")
    assert np.isfinite(float(loss))


def _reference_f64_by_chunks(e, c, t, where, g, rows_dc, chunk=2**19):
    """Host float64 reference for a catalog too large for ``reference_f64``: per-row losses, dE
    with its error scale sum_j (P_rj + onehot_rj) |c_j|, and dC on the classifier rows
    ``rows_dc`` with its scale, in two passes over catalog chunks (never N x V at once)."""
    e64 = np.asarray(e.astype(jnp.float32), np.float64)
    n, v = e64.shape[0], c.shape[0]
    w = np.asarray(where)
    t = np.where(w, np.asarray(t), 0)
    m, s = np.full(n, -np.inf), np.zeros(n)
    for lo in range(0, v, chunk):
        z = e64 @ np.asarray(c[lo:lo + chunk].astype(jnp.float32), np.float64).T
        m_new = np.maximum(m, z.max(axis=1))
        s = s * np.exp(m - m_new) + np.exp(z - m_new[:, None]).sum(axis=1)
        m = m_new
    lse = m + np.log(s)
    c_t = np.asarray(c[t].astype(jnp.float32), np.float64)
    rows = np.where(w, lse - (e64 * c_t).sum(axis=1), 0.0)
    pc, pabs = np.zeros_like(e64), np.zeros_like(e64)
    for lo in range(0, v, chunk):
        c64 = np.asarray(c[lo:lo + chunk].astype(jnp.float32), np.float64)
        p = np.exp(e64 @ c64.T - lse[:, None])
        pc += p @ c64
        pabs += p @ np.abs(c64)
    gw = np.where(w, g, 0.0)[:, None]
    de = gw * (pc - c_t)
    de_scale = np.abs(gw) * (pabs + np.abs(c_t))
    c_s = np.asarray(c[rows_dc].astype(jnp.float32), np.float64)
    p_s = np.exp(e64 @ c_s.T - lse[:, None])
    onehot = (t[:, None] == rows_dc[None, :]) & w[:, None]
    dc = (gw * (p_s - onehot)).T @ e64
    dc_scale = (np.abs(gw) * (p_s + onehot)).T @ np.abs(e64)
    return rows, de, de_scale, dc, dc_scale


def test_chunked_float64_reference_matches_the_dense_one():
    # The GPU test below relies on this two-pass host reference; check it where both fit.
    rng = _rng("ref-chunks")
    e, c, t, where = make_inputs(rng, 37, 301, 24, jnp.bfloat16)
    g = 1.0 / float(np.asarray(where).sum())
    rows_dc = np.asarray([0, 5, 150, 300])
    rows, de, _, dc, _ = _reference_f64_by_chunks(e, c, t, where, g, rows_dc, chunk=64)
    rows_ref, dz, _, _, e64, c64 = reference_f64(e, c, t, where)
    np.testing.assert_allclose(rows, rows_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(de, g * dz @ c64, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dc, (g * dz.T @ e64)[rows_dc], rtol=1e-10, atol=1e-12)


@pytest.mark.gpu
def test_gpu_catalog_past_32_bit_offsets_matches_float64():
    # The real thing the interpreter test above shrinks: V x D > 2^31 (8.4M items at D = 256,
    # 4.3 GB of bf16 classifier) runs as two launches. Both the Pallas kernels and the chunked XLA
    # path against a host float64 reference (two passes over the catalog). Tolerances as at the
    # top with bf16 (logits here are O(1), so the float32 logit term is negligible): loss 2e-4
    # relative; each gradient entry within 2^-7 of its error scale sum (P + onehot) |operand|.
    from pallas_kernels.cce import ops

    rng = _rng("gpu-2^31")
    n, v, d = 517, 2**23 + 12345, 256
    chunks = ops.catalog_chunks(v, d)
    assert len(chunks) == 2
    lo = chunks[0][1]
    key_e, key_c = jax.random.split(jax.random.key(int(rng.integers(2**31))))
    c = (jax.random.normal(key_c, (v, d), jnp.float32) / d ** 0.25).astype(jnp.bfloat16)
    e = (jax.random.normal(key_e, (n, d), jnp.float32) / d ** 0.25).astype(jnp.bfloat16)
    # Peaked rows copy their target's vector; targets on both sides of the chunk boundary.
    t = rng.integers(0, v, n)
    t[:8] = [0, v - 1, lo - 1, lo, lo + 1, 2**23 - 1, 2**23, 2**23 + 1]
    e = e.at[:40].set(c[t[:40]] * 2)
    t = jnp.asarray(t, jnp.int32)
    where = jnp.asarray(rng.random(n) >= 0.3).at[:8].set(True)
    g = 1.0 / float(np.asarray(where).sum())
    rows_dc = np.unique(np.concatenate([np.asarray(t), [lo - 2, lo - 1, lo, lo + 1, v - 1],
                                        rng.integers(0, v, 2000)]))
    rows_ref, de_ref, de_scale, dc_ref, dc_scale = _reference_f64_by_chunks(
        e, c, t, where, g, rows_dc)
    loss_ref = rows_ref.sum() * g
    report = {}
    for impl in ("pallas", "xla"):
        fn = lambda e_, c_: linear_cross_entropy(e_, c_, t, where=where, impl=impl)  # noqa: E731
        loss, (de, dc) = jax.jit(jax.value_and_grad(fn, (0, 1)))(e, c)
        de = np.asarray(de.astype(jnp.float32), np.float64)
        dc = np.asarray(dc[rows_dc].astype(jnp.float32), np.float64)
        report[impl] = (abs(float(loss) - loss_ref) / abs(loss_ref),
                        float(np.max(np.abs(de - de_ref) / (de_scale + 1e-30))),
                        float(np.max(np.abs(dc - dc_ref) / (dc_scale + 1e-30))))
    msg = f"(loss rel. err, max dE err / scale, max dC err / scale) per impl: {report}"
    print(msg)
    for impl, (loss_err, de_err, dc_err) in report.items():
        assert loss_err <= LOSS_RTOL["bfloat16"], msg
        assert de_err <= GRAD_RTOL["bfloat16"] and dc_err <= GRAD_RTOL["bfloat16"], msg


@pytest.mark.parametrize("dtype_name", ["float32", "bfloat16"])
def test_target_term_outside_kernels_with_repeated_targets(dtype_name):
    # Many rows share a few targets (popular items): the default backward adds their target
    # terms to dC as one float32 sum per item; it must match float64 like the in-kernel form.
    rng = _rng("repeated-targets", dtype_name)
    e, c, t, where = make_inputs(rng, 45, 29, 16, DTYPES[dtype_name])
    t = jnp.where(where, jnp.asarray(rng.integers(0, 3, 45), jnp.int32), t)
    check_case(e, c, t, where, "sum", "interpret", dtype_name, TILES)
    check_case(e, c, t, where, "sum", "interpret", dtype_name, TILES, split=True)


@pytest.mark.parametrize("impl", ["xla", "interpret"])
def test_bwd_without_a_target_takes_no_target_term(impl):
    # linear_cross_entropy_bwd given a log-sum-exp from elsewhere (a vocabulary shard gets the
    # global one and a target it may not own): rows whose target is -1 get only the softmax
    # term. Against float64: dE = g P C, dC = (g P)^T E with P = exp(z - lse).
    rng = _rng("no-target", impl)
    e, c, t, where = make_inputs(rng, 29, 45, 16, jnp.float32)
    lse = jnp.asarray(rng.normal(size=29) + 4.0, jnp.float32)
    g = jnp.asarray(rng.normal(size=29), jnp.float32)
    t_out = jnp.where(jnp.arange(29) % 3 == 0, -1, t)
    de, dc = linear_cross_entropy_bwd(e, c, t_out, lse, g, where=where, impl=impl,
                                      config=CCEConfig(block_n=16, block_v=16))
    e64, c64 = np.asarray(e, np.float64), np.asarray(c, np.float64)
    w = np.asarray(where)
    t_np = np.asarray(t_out)
    owned = w & (t_np >= 0) & (t_np < 45)
    gp = np.where(w, np.asarray(g), 0.0)[:, None] * np.exp(e64 @ c64.T - np.asarray(lse)[:, None])
    onehot = np.zeros_like(gp)
    onehot[np.flatnonzero(owned), t_np[owned]] = np.asarray(g)[owned]
    gz = gp - onehot
    scale = np.abs(gp) + np.abs(onehot)
    for got, ref, mag in ((de, gz @ c64, scale @ np.abs(c64)), (dc, gz.T @ e64, scale.T @ np.abs(e64))):
        assert np.all(np.abs(np.asarray(got, np.float64) - ref) <= 1e-5 * mag + 1e-7)


def test_fwd_returns_the_log_sum_exp():
    rng = _rng("fwd-lse")
    e, c, t, where = make_inputs(rng, 33, 70, 16, jnp.float32)
    rows_ref, *_ = reference_f64(e, c, t, where)
    z = np.asarray(e, np.float64) @ np.asarray(c, np.float64).T
    lse_ref = np.log(np.exp(z).sum(axis=1))
    w = np.asarray(where)
    for impl in ("xla", "interpret"):
        rows, lse = linear_cross_entropy_fwd(e, c, t, where=where, impl=impl,
                                             config=CCEConfig(block_n=16, block_v=16))
        assert rows.dtype == jnp.float32 and lse.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(lse)[w], lse_ref[w], rtol=2e-6, atol=2e-6)
        np.testing.assert_allclose(np.asarray(rows), rows_ref, rtol=2e-5, atol=2e-5)
        # Rows without a target (-1; the running-max kernel then): the loss is the lse.
        t_none = jnp.where(jnp.arange(33) % 4 == 0, -1, t)
        rows_n, lse_n = linear_cross_entropy_fwd(e, c, t_none, where=where, impl=impl,
                                                 config=CCEConfig(block_n=16, block_v=16))
        none = (np.arange(33) % 4 == 0) & w
        np.testing.assert_allclose(np.asarray(lse_n)[w], lse_ref[w], rtol=2e-6, atol=2e-6)
        np.testing.assert_allclose(np.asarray(rows_n)[none], lse_ref[none], rtol=2e-6, atol=2e-6)
        np.testing.assert_allclose(np.asarray(rows_n)[~none], rows_ref[~none], rtol=2e-5,
                                   atol=2e-5)
    with pytest.raises(ValueError, match="outside"):
        linear_cross_entropy_fwd(e, c, jnp.where(where, -2, t), where=where, impl="xla")


def test_bwd_shape_errors_are_one_line():
    e, c, t, where = make_inputs(_rng("bwd-errors"), 4, 6, 8, jnp.float32)
    with pytest.raises(ValueError, match="lse must have shape"):
        linear_cross_entropy_bwd(e, c, t, jnp.zeros(3), jnp.zeros(4), where=where, impl="xla")
    with pytest.raises(ValueError, match="d_rows must have shape"):
        linear_cross_entropy_bwd(e, c, t, jnp.zeros(4), jnp.zeros(5), where=where, impl="xla")
    with pytest.raises(ValueError, match="impl"):
        linear_cross_entropy_fwd(e, c, t, where=where, impl="naive")


def test_get_default_is_the_tile_table():
    # Differentiated path (one-pass forward + dC kernel) and plain forward per D (bf16); float32
    # rows count as bf16 rows twice as long; small batches split the catalog.
    from pallas_kernels.cce.config import get_default

    for d, (bn, bv, fbn, fbv) in {64: (64, 64, 64, 128), 128: (64, 128, 128, 64),
                                  256: (64, 64, 256, 64)}.items():
        cfg = get_default(131072, 10**6, d, jnp.bfloat16)
        assert (cfg.block_n, cfg.block_v, cfg.fwd_block_n, cfg.fwd_block_v) == (bn, bv, fbn, fbv)
        assert cfg.num_splits == 1 and cfg.fwd_impl == "triton"  # (no Hopper GPU here)
    assert get_default(131072, 10**6, 128, jnp.float32) == get_default(131072, 10**6, 256)
    assert get_default(2048, 10**6, 128).num_splits == 8
