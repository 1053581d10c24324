"""pallas_kernels.atomics: the atomic add lowers to a relaxed Triton atomic (where this jax has
the hooks) and sums repeated rows, in the interpreter and on the GPU."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plt

from pallas_kernels import atomics
from tests.kernels.cuda_lowering import lower_for_cuda


def _scatter_call(rows, d, v, *, interpret, masked=False, debug=False):
    """out[ids[i]] += val[i] for a [rows, d] block, with one vector atomic (compiled) or one
    atomic per row (interpreter: its discharge of a vector-indexed add keeps one of repeated
    indices, as kernels.py notes)."""

    def kernel(ids_ref, val_ref, out_in_ref, out_ref):
        del out_in_ref
        ids, val = ids_ref[...], val_ref[...]
        if interpret:
            def one(i, carry):
                atomics.atomic_add(out_ref, (ids[i], slice(None)), val[i])
                return carry
            jax.lax.fori_loop(0, rows, one, 0)
        else:
            mask = (ids >= 0)[:, None] & jnp.ones((rows, d), bool) if masked else None
            atomics.atomic_add(out_ref, (jnp.maximum(ids, 0), slice(None)), val, mask=mask)

    def f(ids, val, out):
        return pl.pallas_call(kernel, out_shape=jax.ShapeDtypeStruct((v, d), out.dtype),
                              input_output_aliases={2: 0}, interpret=interpret, debug=debug,
                              compiler_params=plt.CompilerParams(num_warps=4))(ids, val, out)
    return f


@pytest.mark.parametrize("masked, dtype", [(False, jnp.float32), (True, jnp.float32),
                                           (True, jnp.bfloat16)])
def test_lowered_triton_atomic_is_relaxed(masked, dtype, capsys):
    ordering = "relaxed" if atomics.RELAXED_AVAILABLE else "acq_rel"  # (the fallback)
    rows, d, v = 16, 32, 50
    f = _scatter_call(rows, d, v, interpret=False, masked=masked, debug=True)
    lower_for_cuda(jax.jit(f).trace(jnp.zeros(rows, jnp.int32), jnp.ones((rows, d), dtype),
                                    jnp.zeros((v, d), dtype)))
    ir = [line for line in capsys.readouterr().out.splitlines() if "tt.atomic_rmw" in line]
    assert len(ir) == 1, ir
    assert f"tt.atomic_rmw fadd, {ordering}, gpu" in ir[0]
    assert ("tensor<16x32xi1>" in ir[0]) == masked  # the mask reaches the atomic


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_interpreted_adds_sum_repeated_rows(dtype):
    rng = np.random.default_rng(jnp.dtype(dtype).itemsize)
    rows, d, v = 23, 8, 7  # 23 rows into 7: every row of out is hit several times
    ids = rng.integers(0, v, size=rows).astype(np.int32)
    val = rng.normal(size=(rows, d)).astype(np.float32)
    out0 = rng.normal(size=(v, d)).astype(np.float32)
    val_d, out_d = jnp.asarray(val, dtype), jnp.asarray(out0, dtype)
    got = _scatter_call(rows, d, v, interpret=True)(jnp.asarray(ids), val_d, out_d)
    want = np.asarray(out_d, np.float64)
    np.add.at(want, ids, np.asarray(val_d, np.float64))
    tol = 1e-6 if dtype == jnp.float32 else 3e-2  # bf16: one rounding per add, |sum| < ~8
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=tol, atol=tol)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_gpu_vector_adds_sum_repeated_and_masked_rows(dtype):
    # One [rows, d] vector atomic per program, repeated ids within and across the 64 programs,
    # a quarter of the rows masked (id -1).
    rng = np.random.default_rng(7)
    rows, d, v, programs = 32, 64, 97, 64
    ids = rng.integers(-1, v, size=(programs, rows)).astype(np.int32)
    ids[rng.random(ids.shape) < 0.25] = -1
    val = rng.normal(size=(programs, rows, d)).astype(np.float32)
    out0 = np.zeros((v, d), np.float32)

    def kernel(ids_ref, val_ref, out_in_ref, out_ref):
        del out_in_ref
        i = ids_ref[0]
        mask = (i >= 0)[:, None] & jnp.ones((rows, d), bool)
        atomics.atomic_add(out_ref, (jnp.maximum(i, 0), slice(None)), val_ref[0], mask=mask)

    val_d = jnp.asarray(val, dtype)
    got = pl.pallas_call(
        kernel, grid=(programs,), out_shape=jax.ShapeDtypeStruct((v, d), dtype),
        in_specs=[pl.BlockSpec((1, rows), lambda p: (p, 0)),
                  pl.BlockSpec((1, rows, d), lambda p: (p, 0, 0)), pl.BlockSpec()],
        out_specs=pl.BlockSpec(), input_output_aliases={2: 0},
        compiler_params=plt.CompilerParams(num_warps=4))(
            jnp.asarray(ids), val_d, jnp.asarray(out0, dtype))
    keep = ids >= 0
    want = np.zeros((v, d))
    np.add.at(want, ids[keep], np.asarray(val_d, np.float64)[keep])
    # bf16: every add rounds the running sum (up to ~40 adds of N(0, 1) per element).
    tol = 1e-5 if dtype == jnp.float32 else 0.15
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=tol, atol=tol)
