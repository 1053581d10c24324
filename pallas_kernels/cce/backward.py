"""Backward CCE kernels: recompute logit tiles, G = softmax * g, contract into dE and dC.

Two kernels: ``dc`` owns catalog tiles of dC and streams the rows; ``de`` owns row tiles of dE
and streams the catalog. Each recomputes its logits, so there are no atomics, no float32
[V, D] buffer, and the result is deterministic (a one-pass form with float32 atomics into dC
measured 3.1x slower; docs/decisions). The forward of a differentiated call has already
accumulated dE's softmax term (``forward.py``, ``with_acc``), so there only the dC kernel runs;
the dE kernel serves ``linear_cross_entropy_bwd`` given a log-sum-exp from elsewhere (e.g. a
vocabulary shard given the global one), and ``softmax_mean``.

The kernels form G = softmax * g only, with no per-logit compare against the target: ``ops``
adds the O(N D) target term -g_r e_r (dC) and -g_r c_{t_r} (dE) itself (5-11% faster,
docs/decisions/003). G is cast to the input dtype only as a GEMM operand; all accumulation is
float32.
Rows with g == 0 (masked) give G == 0 exactly.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from pallas_kernels.cce import common


def _grad_tile(x, lse2, g, exp_mode: str, transposed: bool):
    """float32 G = softmax * g from float32 logits x ([rows, cols] or, transposed,
    [cols, rows]); lse2 is the rows' log2-domain log-sum-exp."""
    if transposed:
        return common.exp2_shifted(x, lse2[None, :], exp_mode) * g[None, :]
    return common.exp2_shifted(x, lse2[:, None], exp_mode) * g[:, None]


def _de_kernel(e_ref, c_ref, lse2_ref, t_ref, g_ref, de_ref, *, v, block_v, n_full, has_tail,
               precision, exp_mode):
    e = e_ref[...]
    lse2, t, g = lse2_ref[...], t_ref[...], g_ref[...]
    del t  # (loaded as it was measured; the target term is added outside)

    def step(j, acc, tail: bool):
        start = j * block_v
        c = common.load_rows(c_ref, start, block_v, v if tail else None)
        x = common.dot_nt(e, c, precision)
        # Rows of c beyond V are zeros, so their G entries meet zero rows: no mask needed.
        grad = _grad_tile(x, lse2, g, exp_mode, transposed=False)
        return acc + common.dot_nn(grad.astype(e.dtype), c, precision)

    zeros = jnp.zeros(e.shape, jnp.float32)
    acc = common.chained_sum(n_full, functools.partial(step, tail=False), zeros, block_v)
    if has_tail:
        acc = acc + step(common.traced(n_full), zeros, tail=True)
    de_ref[...] = acc.astype(de_ref.dtype)


def _dc_kernel(e_ref, c_ref, lse2_ref, t_ref, g_ref, dc_ref, *, v, block_v, block_n, n_row_tiles,
               precision, exp_mode):
    del t_ref  # the target term is added outside
    j = pl.program_id(0)
    start = j * block_v
    cols = start + jnp.arange(block_v)
    col_ok = cols < v
    c = plgpu.load(c_ref.at[pl.ds(start, block_v), :], mask=col_ok[:, None], other=0.0)

    def step(i, acc):
        rows = pl.ds(i * block_n, block_n)
        e = e_ref[rows, :]
        xt = common.dot_nt(c, e, precision)  # [block_v, block_n]
        # (Operand load order as it was measured: it changes Triton's pipelining.)
        grad_t = _grad_tile(xt, lse2_ref[rows], g_ref[rows], exp_mode, transposed=True)
        return acc + common.dot_nn(grad_t.astype(e.dtype), e, precision)

    acc = common.chained_sum(n_row_tiles, step, jnp.zeros(c.shape, jnp.float32), block_n)
    # Rows >= V of this tile are never stored.
    plgpu.store(dc_ref.at[pl.ds(start, block_v), :], acc.astype(dc_ref.dtype),
                mask=col_ok[:, None])


def grads(e_pad, c_pad, v, lse2, t, g, plan: common.KernelPlan, *, interpret: bool,
          de_dtype=None, want_de: bool = True):
    """(dE [Np, Dp] in ``de_dtype`` (default e's dtype), dC [V, Dp] in c's dtype) for padded
    inputs, without the target term (module docstring). Callers that sum dE over several catalog
    chunks ask for float32. ``want_de=False``: dE is None and its kernel is not run (the forward
    already accumulated it).

    lse2: float32 [Np] log2-domain LSE; t: int32 [Np] (-1 where masked); g: float32 [Np]
    per-row cotangent (0 where masked). Np must be a multiple of ``plan.bwd_block_n``.
    """
    n_pad, d_pad = e_pad.shape
    de_dtype = e_pad.dtype if de_dtype is None else de_dtype
    bn, bv = plan.bwd_block_n, plan.bwd_block_v
    n_tiles = pl.cdiv(v, bv)
    full = pl.no_block_spec
    de = None
    if want_de:
        de = _de_call(e_pad, c_pad, v, lse2, t, g, plan, interpret, de_dtype)
    dc = pl.pallas_call(
        functools.partial(_dc_kernel, v=v, block_v=bv, block_n=bn, n_row_tiles=n_pad // bn,
                          precision=common.dot_precision(e_pad.dtype),
                          exp_mode=common.exp_mode(interpret)),
        grid=(n_tiles,),
        in_specs=[full] * 5,
        out_specs=full,
        out_shape=jax.ShapeDtypeStruct(c_pad.shape, c_pad.dtype),
        compiler_params=common.compiler_params(plan.bwd_warps, plan.bwd_stages),
        interpret=interpret, name="cce_backward_dc",
    )(e_pad, c_pad, lse2, t, g)
    return de, dc


def _de_call(e_pad, c_pad, v, lse2, t, g, plan: common.KernelPlan, interpret: bool, de_dtype,
             name="cce_backward_de"):
    """The dE-owner kernel over row tiles of ``plan.bwd_block_n`` (see ``grads``)."""
    n_pad, d_pad = e_pad.shape
    bn, bv = plan.bwd_block_n, plan.bwd_block_v
    n_full = v // bv
    row_spec = pl.BlockSpec((bn, d_pad), lambda i: (i, 0))
    vec_spec = pl.BlockSpec((bn,), lambda i: (i,))
    return pl.pallas_call(
        functools.partial(_de_kernel, v=v, block_v=bv, n_full=n_full,
                          has_tail=n_full != pl.cdiv(v, bv),
                          precision=common.dot_precision(e_pad.dtype),
                          exp_mode=common.exp_mode(interpret)),
        grid=(n_pad // bn,),
        in_specs=[row_spec, pl.no_block_spec, vec_spec, vec_spec, vec_spec],
        out_specs=row_spec,
        out_shape=jax.ShapeDtypeStruct(e_pad.shape, de_dtype),
        compiler_params=common.compiler_params(plan.bwd_warps, plan.bwd_stages),
        interpret=interpret, name=name,
    )(e_pad, c_pad, lse2, t, g)


def softmax_mean(e_pad, c_pad, v, lse2, plan: common.KernelPlan, *, interpret: bool):
    """float32 [Np, Dp]: sum_v softmax_rv c_v, i.e. the dE kernel with g = 1 and no target term
    (the fused forward's fallback when its target-shifted sums overflow, ``ops``)."""
    n_pad = e_pad.shape[0]
    return _de_call(e_pad, c_pad, v, lse2, jnp.full((n_pad,), -1, jnp.int32),
                    jnp.ones((n_pad,), jnp.float32), plan, interpret, jnp.float32,
                    name="cce_softmax_mean")
