"""Forward CCE kernel: per-row log-sum-exp over the whole catalog, never writing logits.

One program per (row tile, catalog split). It keeps its [block_n, D] tile of E in registers and
streams the split's catalog tiles [block_v, D], summing 2^(x log2 e - shift) per row (exp2 with
log2(e) folded into one FMA). The shift is, by default, the row's target logit, computed before
the kernel (an O(N D) gather in XLA): it is at most the row max, so no running max, no per-tile
row max and no rescaling are needed, and the sum stays a [block_n, block_v] tile until the end
(measured 7-12% faster than the running max, docs/decisions/002). A row whose logits exceed its
target's by ~70 overflows; ``ops`` then redoes the batch with the running-max kernel
(``shift=None``). Only float32 [num_splits, N]
partial LSEs leave the kernel; ``lse_rows`` merges the splits (a tiny XLA op).

With ``with_acc`` (target shift only; the forward of a differentiated call) each program also accumulates acc_r = sum_v 2^(x_rv log2 e - shift_r) c_v,
the classifier rows weighted by the unnormalised softmax, as attention accumulates P V: a second
GEMM per tile on the same exponentials. Divided by the row's sum it is sum_v softmax_rv c_v, the
main term of dE, so the backward need not recompute the logits and exponentials a second time
for dE. Because the shift is fixed per row there is no rescaling of acc; partial accs of splits
and catalog chunks (same shift) simply add. Costs a float32 [N, D] output.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from pallas_kernels.cce import common

_NEG_INF = float("-inf")


def _fwd_kernel(e_ref, c_ref, *refs, v: int, block_v: int, tiles_per_split: int, n_full: int,
                has_tail: bool, num_splits: int, precision, exp_mode: str, fixed_shift: bool,
                sum_tile: bool, with_acc: bool = False):
    if fixed_shift:
        shift_ref, lse2_ref, *acc_ref = refs
    else:
        shift_ref, (lse2_ref, *acc_ref) = None, refs
    split = pl.program_id(1)
    e = e_ref[...]  # [block_n, D], resident for the whole catalog stream
    block_n = e.shape[0]

    tail_j = common.traced(n_full, 1)

    def logits(j, tail: bool):
        """(float32 logits [block_n, block_v], the catalog tile [block_v, D])."""
        start = j * block_v
        c = common.load_rows(c_ref, start, block_v, v if tail else None)
        x = common.dot_nt(e, c, precision)  # float32 [block_n, block_v]
        if tail:
            cols = start + jnp.arange(block_v)
            x = jnp.where((cols < v)[None, :], x, _NEG_INF)
        return x, c

    if fixed_shift:
        shift2 = shift_ref[...]  # float32 [block_n], log2 domain, <= the row max

        def step(j, carry, tail: bool):
            x, c = logits(j, tail)
            p = common.exp2_shifted(x, shift2[:, None], exp_mode)
            s = carry[0] + (p if sum_tile else jnp.sum(p, axis=1))
            if not with_acc:
                return (s,)
            # Rows of c past V are zeros and their p is 0: nothing to mask.
            return s, carry[1] + common.dot_nn(p.astype(e.dtype), c, precision)

        init = (jnp.zeros((block_n, block_v) if sum_tile else (block_n,), jnp.float32),)
        if with_acc:
            init += (jnp.zeros(e.shape, jnp.float32),)
    else:
        def step(j, carry, tail: bool):
            # m2: running max of the rounded x log2(e); s: sum of 2^(x log2 e - m2). The old sum
            # is rescaled by 2^(m2 - m2_new), with the m2 it was taken against: with the FMA
            # exponentials a term is 2^(x log2 e - m2) with an unrounded product, so rounding
            # m log2 e afresh would shift the old terms by its rounding error.
            m2, s = carry
            x, _ = logits(j, tail)
            m2_new = jnp.maximum(m2, jnp.max(x, axis=1) * common.LOG2E)
            p = common.exp2_shifted(x, m2_new[:, None], exp_mode)
            s = s * common.exp2(m2 - m2_new, exp_mode) + jnp.sum(p, axis=1)
            return m2_new, s

        init = (jnp.full((block_n,), _NEG_INF, jnp.float32), jnp.zeros((block_n,), jnp.float32))

    lo = split * tiles_per_split
    hi = jnp.minimum(lo + tiles_per_split, n_full)
    carry = init
    if n_full > 0:  # (a catalog smaller than one tile has only the masked tail)
        body = functools.partial(step, tail=False)
        if with_acc:  # acc is a tensor-core chain: restart it on long catalogs (common.py)
            carry = common.chained_range_sum(lo, hi, tiles_per_split, body, carry, block_v)
        else:
            carry = lax.fori_loop(lo, hi, body, carry)
    if has_tail:  # the ragged last catalog tile belongs to the last split
        carry = lax.cond(split == num_splits - 1,
                         lambda c: step(tail_j, c, tail=True), lambda c: c, carry)
    # log2-domain LSE; an empty split gives -inf, which the merge ignores.
    if fixed_shift:
        s = jnp.sum(carry[0], axis=1) if sum_tile else carry[0]
        lse2_ref[...] = shift2 + jnp.log2(s)
        if with_acc:
            acc_ref[0][...] = carry[1]
    else:
        m2, s = carry
        lse2_ref[...] = m2 + jnp.log2(s)


def lse_rows(e_pad: jax.Array, c_pad: jax.Array, v: int, cfg: common.KernelPlan, *,
             interpret: bool, shift: jax.Array | None = None, with_acc: bool = False):
    """Natural-log LSE, float32 [Np], of e_pad [Np, Dp] against the V rows of c_pad [V, Dp].

    Np must be a multiple of ``cfg.fwd_block_n``; Dp a power of two. ``shift`` (float32 [Np],
    natural log, at most each row's max logit, e.g. its target logit): exponentials are taken
    relative to it instead of a running max; None: running max. A row whose logits exceed its
    shift by more than ~70 overflows to +inf (callers check and redo it with ``shift=None``).
    ``with_acc`` (needs ``shift``): returns (lse, acc) with acc float32 [Np, Dp] =
    sum_v exp(x_rv - shift_r) c_v (module docstring), with the settings ``cfg.fde_*``.
    """
    if with_acc and shift is None:
        raise ValueError("with_acc needs a fixed shift")
    n_pad, d_pad = e_pad.shape
    if with_acc:
        bn, bv, warps, stages = cfg.fde_block_n, cfg.fde_block_v, cfg.fde_warps, cfg.fde_stages
    else:
        bn, bv, warps, stages = cfg.fwd_block_n, cfg.fwd_block_v, cfg.fwd_warps, cfg.fwd_stages
    n_tiles = pl.cdiv(v, bv)
    n_full = v // bv
    splits = max(1, min(cfg.num_splits, n_tiles))
    tiles_per_split = pl.cdiv(max(n_full, 1), splits)
    splits = max(1, pl.cdiv(max(n_full, 1), tiles_per_split))
    kernel = functools.partial(
        _fwd_kernel, v=v, block_v=bv, tiles_per_split=tiles_per_split, n_full=n_full,
        has_tail=n_full != n_tiles, num_splits=splits,
        precision=common.dot_precision(e_pad.dtype), exp_mode=common.exp_mode(interpret),
        fixed_shift=shift is not None,
        sum_tile=bool(cfg.fde_sum_tile if with_acc else cfg.fwd_sum_tile), with_acc=with_acc)
    extra = () if shift is None else (shift.astype(jnp.float32) * common.LOG2E,)
    out_specs = [pl.BlockSpec((None, bn), lambda i, s: (s, i))]
    out_shape = [jax.ShapeDtypeStruct((splits, n_pad), jnp.float32)]
    if with_acc:
        out_specs.append(pl.BlockSpec((None, bn, d_pad), lambda i, s: (s, i, 0)))
        out_shape.append(jax.ShapeDtypeStruct((splits, n_pad, d_pad), jnp.float32))
    out = pl.pallas_call(
        kernel,
        grid=(n_pad // bn, splits),
        in_specs=[pl.BlockSpec((bn, d_pad), lambda i, s: (i, 0)), pl.no_block_spec]
        + [pl.BlockSpec((bn,), lambda i, s: (i,)) for _ in extra],
        out_specs=out_specs,
        out_shape=out_shape,
        compiler_params=common.compiler_params(warps, stages),
        interpret=interpret,
        name="cce_forward_lse_acc" if with_acc else "cce_forward_lse",
    )(e_pad, c_pad, *extra)
    lse2 = out[0]
    if splits == 1:
        lse = lse2[0] * common.LN2
    else:
        m = jnp.max(lse2, axis=0)
        lse = (m + jnp.log2(jnp.sum(jnp.exp2(lse2 - m[None, :]), axis=0))) * common.LN2
    if not with_acc:
        return lse
    # Same shift in every split: the partial accs add.
    return lse, out[1][0] if splits == 1 else jnp.sum(out[1], axis=0)
