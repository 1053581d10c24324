"""Forward CCE kernel: per-row log-sum-exp over the whole catalog, never writing logits.

One program per (row tile, catalog split). It keeps its [block_n, D] tile of E in registers and
streams the split's catalog tiles [block_v (+ poly_v), D], keeping an online max and sum of
2^(x log2 e - m) per row (exp2 with log2(e) folded into one FMA; the optional poly_v columns
of each step take their exponentials on the FMA pipes, ``common.exp2_poly``). Only float32 [num_splits, N] partial LSEs leave
the kernel; ``lse_rows`` merges the splits (a tiny XLA op). The target logit is an O(N D) gather
done in XLA (``reference.target_logits``), which keeps a compare/select out of the hot loop.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from pallas_kernels.cce import common

_NEG_INF = float("-inf")


def _fwd_kernel(e_ref, c_ref, lse2_ref, *, v: int, block_v: int, poly_v: int,
                tiles_per_split: int, n_full: int, has_tail: bool, num_splits: int, precision,
                exp_asm: bool, prefetch: bool, interpret: bool):
    split = pl.program_id(1)
    e = e_ref[...]  # [block_n, D], resident for the whole catalog stream
    block_n = e.shape[0]
    step_v = block_v + poly_v  # catalog columns per step: exponential unit, then polynomial
    parts = [(0, block_v, common.exp2_fn("mufu", exp_asm, interpret))]
    if poly_v:
        parts.append((block_v, poly_v, common.exp2_fn("poly", exp_asm, interpret)))
    exp2_mufu = parts[0][2]

    tail_j = common.traced(n_full, 1)

    def logits(j, tail: bool):
        """float32 [block_n, width] logits of each part of step j (-inf beyond V)."""
        xs = []
        for offset, width, _ in parts:
            start = j * step_v + offset
            c = common.load_rows(c_ref, start, width, v if tail else None)
            x = common.dot_nt(e, c, precision)
            if tail:
                x = jnp.where(((start + jnp.arange(width)) < v)[None, :], x, _NEG_INF)
            xs.append(x)
        return xs

    def accumulate(carry, xs):
        m, s = carry  # running max of raw logits, sum of 2^(x*log2e - m*log2e); float32 [block_n]
        m_new = m
        for x in xs:
            m_new = jnp.maximum(m_new, jnp.max(x, axis=1))
        m2 = m_new * common.LOG2E
        s = s * exp2_mufu(m * common.LOG2E - m2)
        for x, (_, _, exp2) in zip(xs, parts):
            s = s + jnp.sum(exp2(x * common.LOG2E - m2[:, None]), axis=1)
        return m_new, s

    lo = split * tiles_per_split
    hi = jnp.minimum(lo + tiles_per_split, n_full)
    init = (jnp.full((block_n,), _NEG_INF, jnp.float32), jnp.zeros((block_n,), jnp.float32))
    carry = init
    if n_full > 0 and prefetch:
        # Step j's exponentials come after step j+1's GEMM in program order, so the tensor
        # cores need not wait for them (the last step recomputes its own tile, unused).
        def body(j, c):
            m, s, xs = c
            xs_next = logits(jnp.minimum(j + 1, hi - 1), tail=False)
            m, s = accumulate((m, s), xs)
            return m, s, xs_next

        m, s, _ = lax.fori_loop(lo, hi, body, (*init, logits(lo, tail=False)))
        carry = (m, s)
    elif n_full > 0:  # (a catalog smaller than one step has only the masked tail)
        carry = lax.fori_loop(lo, hi, lambda j, c: accumulate(c, logits(j, tail=False)), carry)
    if has_tail:  # the ragged last catalog step belongs to the last split
        carry = lax.cond(split == num_splits - 1,
                         lambda c: accumulate(c, logits(tail_j, tail=True)), lambda c: c, carry)
    m, s = carry
    # log2-domain LSE; an empty split gives -inf, which the merge ignores.
    lse2_ref[...] = m * common.LOG2E + jnp.log2(s)


def lse_rows(e_pad: jax.Array, c_pad: jax.Array, v: int, cfg: common.KernelConfig, *,
             interpret: bool) -> jax.Array:
    """Natural-log LSE, float32 [Np], of e_pad [Np, Dp] against the V rows of c_pad [V, Dp].

    Np must be a multiple of ``cfg.fwd_block_n``; Dp a power of two.
    """
    n_pad, d_pad = e_pad.shape
    bn, bv, bp = cfg.fwd_block_n, cfg.fwd_block_v, cfg.fwd_poly_v or 0
    n_tiles = pl.cdiv(v, bv + bp)
    n_full = v // (bv + bp)
    splits = max(1, min(cfg.num_splits, n_tiles))
    tiles_per_split = pl.cdiv(max(n_full, 1), splits)
    splits = max(1, pl.cdiv(max(n_full, 1), tiles_per_split))
    kernel = functools.partial(
        _fwd_kernel, v=v, block_v=bv, poly_v=bp, tiles_per_split=tiles_per_split,
        n_full=n_full, has_tail=n_full != n_tiles, num_splits=splits,
        precision=common.dot_precision(e_pad.dtype), exp_asm=bool(cfg.exp_asm),
        prefetch=bool(cfg.fwd_prefetch), interpret=interpret)
    lse2 = pl.pallas_call(
        kernel,
        grid=(n_pad // bn, splits),
        in_specs=[pl.BlockSpec((bn, d_pad), lambda i, s: (i, 0)), pl.no_block_spec],
        out_specs=pl.BlockSpec((None, bn), lambda i, s: (s, i)),
        out_shape=jax.ShapeDtypeStruct((splits, n_pad), jnp.float32),
        compiler_params=common.compiler_params(cfg.fwd_warps, cfg.fwd_stages),
        interpret=interpret,
        name="cce_forward_lse",
    )(e_pad, c_pad)
    if splits == 1:
        return lse2[0] * common.LN2
    m = jnp.max(lse2, axis=0)
    return (m + jnp.log2(jnp.sum(jnp.exp2(lse2 - m[None, :]), axis=0))) * common.LN2
