"""``common.exp2_poly`` (2**x on the FMA pipes) against float64, in both of its formulations.

The kernels use the add-magic formulation on the GPU and ``round`` in the interpreter (XLA folds
``(x + magic) - magic`` to ``x``); a numpy emulation of the GPU formulation (no such folding)
checks that both give the same n and f. Bounds: the fitted polynomials' float32 relative errors
(degree 5: 2.2e-7, degree 3: 7.5e-5) plus one float32 rounding of the exponent shift's input,
stated as REL_TOL; below 2**-126 (clamped) the result is < 1.2e-38.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import pallas as pl

from pallas_kernels.cce import common

REL_TOL = {5: 3e-7, 3: 8e-5}


def _inputs(seed: int, n: int = 4096) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.concatenate([
        -rng.exponential(8.0, n),  # the kernels' range: x - max <= 0
        rng.uniform(-126, 0, n),
        np.arange(-126, 1) + 0.5,  # ties of round-half-even
        np.arange(-126, 1, dtype=np.float64),
        [-np.inf, -1e30, -126.0, -125.5, 0.0, -0.0, 1e-9, -1e-9],
    ])
    return x.astype(np.float32)


def _emulate_gpu_formulation(x: np.ndarray, degree: int) -> np.ndarray:
    x = np.maximum(x, np.float32(-126.0))
    magic = np.float32(common._ROUND_MAGIC)
    j = (x + magic).astype(np.float32)
    f = (x - (j - magic)).astype(np.float32)
    coef = common._EXP2_POLY[degree]
    p = np.full_like(f, np.float32(coef[-1]))
    for a in coef[-2::-1]:
        p = (p.astype(np.float64) * f + a).astype(np.float32)  # an FMA: one rounding
    shifted = ((j.view(np.int32).astype(np.int64) << 23) & 0xFFFFFFFF).astype(np.uint32)
    return (p.view(np.uint32) + shifted).view(np.float32)


def _check_against_f64(x, got, degree):
    ref = np.exp2(x.astype(np.float64))
    got = np.asarray(got, np.float64)
    normal = x >= -125.0
    rel = np.abs(got[normal] - ref[normal]) / ref[normal]
    assert rel.max() <= REL_TOL[degree], rel.max()
    assert np.all((got[~normal] >= 0) & (got[~normal] < 2.0 ** -124))
    assert np.all(np.isfinite(got))


@pytest.mark.parametrize("degree", [3, 5])
def test_interpreter_formulation_matches_float64(degree):
    x = _inputs(degree)
    got = jax.jit(lambda v: common.exp2_poly(v, degree, interpret=True))(jnp.asarray(x))
    _check_against_f64(x, got, degree)


@pytest.mark.parametrize("degree", [3, 5])
def test_gpu_formulation_gives_the_same_values(degree):
    x = _inputs(10 + degree)
    emulated = _emulate_gpu_formulation(x, degree)
    _check_against_f64(x, emulated, degree)
    interp = np.asarray(jax.jit(lambda v: common.exp2_poly(v, degree, interpret=True))(
        jnp.asarray(x)))
    # Same n and f; the polynomial may differ by FMA contraction (a few float32 ulps).
    np.testing.assert_allclose(interp, emulated, rtol=4 * np.finfo(np.float32).eps, atol=1e-37)


@pytest.mark.gpu
@pytest.mark.parametrize("degree", [3, 5])
def test_gpu_compiled_exp2_poly_matches_float64(degree):
    # Compiled by Triton: catches a compiler that would fold (x + magic) - magic.
    x = _inputs(20 + degree)[: 8192]
    x = np.pad(x, (0, 8192 - x.size), constant_values=-1.0).reshape(64, 128)

    def kernel(x_ref, o_ref):
        o_ref[...] = common.exp2_poly(x_ref[...], degree)

    got = pl.pallas_call(kernel, out_shape=jax.ShapeDtypeStruct(x.shape, jnp.float32))(
        jnp.asarray(x))
    _check_against_f64(x.ravel(), np.asarray(got).ravel(), degree)
