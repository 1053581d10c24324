"""Forward CCE kernel: per-row log-sum-exp over the whole catalog, never writing logits.

One program per (row tile, catalog split). It keeps its [block_n, D] tile of E in registers and
streams the split's catalog tiles [block_v, D], keeping an online max and sum of 2^(x log2 e - m)
per row (exp2 with log2(e) folded into one FMA). Only float32 [num_splits, N] partial LSEs leave
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


def _fwd_kernel(e_ref, c_ref, lse2_ref, *, v: int, block_v: int, tiles_per_split: int,
                n_full: int, has_tail: bool, num_splits: int, precision, exp_asm: bool):
    split = pl.program_id(1)
    e = e_ref[...]  # [block_n, D], resident for the whole catalog stream
    block_n = e.shape[0]

    tail_j = common.traced(n_full, 1)

    def step(j, carry, tail: bool):
        m, s = carry  # running max of raw logits, sum of 2^(x*log2e - m*log2e); float32 [block_n]
        start = j * block_v
        c = common.load_rows(c_ref, start, block_v, v if tail else None)
        x = common.dot_nt(e, c, precision)  # float32 [block_n, block_v]
        if tail:
            cols = start + jnp.arange(block_v)
            x = jnp.where((cols < v)[None, :], x, _NEG_INF)
        m_new = jnp.maximum(m, jnp.max(x, axis=1))
        m2 = m_new * common.LOG2E
        p = common.exp2(x * common.LOG2E - m2[:, None], exp_asm)
        s = s * common.exp2(m * common.LOG2E - m2, exp_asm) + jnp.sum(p, axis=1)
        return m_new, s

    lo = split * tiles_per_split
    hi = jnp.minimum(lo + tiles_per_split, n_full)
    init = (jnp.full((block_n,), _NEG_INF, jnp.float32), jnp.zeros((block_n,), jnp.float32))
    carry = init
    if n_full > 0:  # (a catalog smaller than one tile has only the masked tail)
        carry = lax.fori_loop(lo, hi, functools.partial(step, tail=False), carry)
    if has_tail:  # the ragged last catalog tile belongs to the last split
        carry = lax.cond(split == num_splits - 1,
                         lambda c: step(tail_j, c, tail=True), lambda c: c, carry)
    m, s = carry
    # log2-domain LSE; an empty split gives -inf, which the merge ignores.
    lse2_ref[...] = m * common.LOG2E + jnp.log2(s)


def lse_rows(e_pad: jax.Array, c_pad: jax.Array, v: int, cfg: common.KernelConfig, *,
             interpret: bool) -> jax.Array:
    """Natural-log LSE, float32 [Np], of e_pad [Np, Dp] against the V rows of c_pad [V, Dp].

    Np must be a multiple of ``cfg.fwd_block_n``; Dp a power of two.
    """
    n_pad, d_pad = e_pad.shape
    bn, bv = cfg.fwd_block_n, cfg.fwd_block_v
    n_tiles = pl.cdiv(v, bv)
    n_full = v // bv
    splits = max(1, min(cfg.num_splits, n_tiles))
    tiles_per_split = pl.cdiv(max(n_full, 1), splits)
    splits = max(1, pl.cdiv(max(n_full, 1), tiles_per_split))
    kernel = functools.partial(
        _fwd_kernel, v=v, block_v=bv, tiles_per_split=tiles_per_split, n_full=n_full,
        has_tail=n_full != n_tiles, num_splits=splits,
        precision=common.dot_precision(e_pad.dtype), exp_asm=cfg.exp_asm and not interpret)
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
