"""Backward CCE kernels: recompute logit tiles, G = (softmax - onehot) * g, contract into dE, dC.

Two schemes, chosen by ``KernelConfig.bwd_mode``:

* "two_pass" (default): one kernel owns row tiles of dE and streams the catalog; a second owns
  catalog tiles of dC and streams the rows. Each recomputes the logits, so the matrix work is
  8 N V D instead of 6 N V D, but there are no atomics, no float32 [V, D] buffer, and the result
  is deterministic. Measured 3.1x faster than "atomic" on an H200 (N=32768, V=1e6, D=128,
  bf16: 72 vs 224 ms, best tiles of each; docs/perf.md, "backward scheme"): the N / block_n
  float32 atomic adds into each dC element cost more than the extra logit recompute. Under
  ``KernelConfig.fused_de`` (the default) the forward has already accumulated dE's softmax
  term, and only the dC kernel runs here.
* "atomic": one kernel per row tile; dE in registers, dC tiles added with float32 atomics into
  a zero-initialised [V_pad, D] float32 buffer (6 N V D).

G is cast to the input dtype only as a GEMM operand; all accumulation is float32. Rows with
g == 0 (masked) and targets -1 give G == 0 exactly. With ``onehot=False`` (what ``ops`` asks for
under the default ``bwd_onehot="xla"``) the two-pass kernels form G = softmax * g only, with no
per-logit compare against the target, and ``ops`` adds the O(N D) target term itself (measured
5-11% faster, docs/perf.md).

Optional gradient filtering (``filter_eps``, a static float; None = off, no ``cond`` traced): a
(row tile x catalog tile) whose max |softmax - onehot| over the rows with g != 0 and the columns
< V is below ``filter_eps`` skips its gradient GEMM(s) (the logit GEMM that decides it is always
paid). The dE and dC kernels decide each tile from their own recomputed logits.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from pallas_kernels import atomics
from pallas_kernels.cce import common


def _grad_tile(x, lse2, t, g, cols, exp_mode: str, transposed: bool, col_mask=None,
               filter_eps=None, count_cols=None, onehot: bool = True):
    """float32 G tile from float32 logits x ([rows, cols] or, transposed, [cols, rows]).

    With ``filter_eps`` (static float) also returns whether the tile is kept: max |P - onehot|
    over rows with g != 0 and columns in ``count_cols`` (default ``col_mask``; None: all) is at
    least ``filter_eps``. ``onehot=False``: G = softmax * g only (the caller subtracts the
    target term outside the kernel; no per-logit compare)."""
    if not onehot:  # (never with filter_eps: it needs |P - onehot|)
        if transposed:
            grad = common.exp2_shifted(x, lse2[None, :], exp_mode) * g[None, :]
            return grad if col_mask is None else jnp.where(col_mask[:, None], grad, 0.0)
        grad = common.exp2_shifted(x, lse2[:, None], exp_mode) * g[:, None]
        return grad if col_mask is None else jnp.where(col_mask[None, :], grad, 0.0)
    if transposed:  # x is [block_v, block_n]
        p = common.exp2_shifted(x, lse2[None, :], exp_mode)
        hit = cols[:, None] == t[None, :]
        err = p - hit.astype(jnp.float32)
        grad = err * g[None, :]
        if col_mask is not None:
            grad = jnp.where(col_mask[:, None], grad, 0.0)
    else:  # x is [block_n, block_v]
        p = common.exp2_shifted(x, lse2[:, None], exp_mode)
        hit = t[:, None] == cols[None, :]
        err = p - hit.astype(jnp.float32)
        grad = err * g[:, None]
        if col_mask is not None:
            grad = jnp.where(col_mask[None, :], grad, 0.0)
    if filter_eps is None:
        return grad
    count_cols = col_mask if count_cols is None else count_cols
    counted = (g != 0)[None, :] if transposed else (g != 0)[:, None]
    if count_cols is not None:
        counted = counted & (count_cols[:, None] if transposed else count_cols[None, :])
    keep = jnp.max(jnp.where(counted, jnp.abs(err), 0.0)) >= filter_eps
    return grad, keep


def _add_if(keep, acc, term):
    """acc + term() where ``keep`` (None: always; else a data-dependent bool, lax.cond)."""
    if keep is None:
        return acc + term()
    return lax.cond(keep, lambda: acc + term(), lambda: acc)


def _de_kernel(e_ref, c_ref, lse2_ref, t_ref, g_ref, de_ref, *, v, block_v, n_full, has_tail,
               precision, exp_mode, filter_eps=None, onehot=True):
    e = e_ref[...]
    lse2, t, g = lse2_ref[...], t_ref[...], g_ref[...]

    def step(j, acc, tail: bool):
        start = j * block_v
        c = common.load_rows(c_ref, start, block_v, v if tail else None)
        cols = start + jnp.arange(block_v)
        x = common.dot_nt(e, c, precision)
        # Rows of c beyond V are zeros, so their G entries meet zero rows: no mask needed.
        if filter_eps is None:
            grad = _grad_tile(x, lse2, t, g, cols, exp_mode, transposed=False, onehot=onehot)
            return acc + common.dot_nn(grad.astype(e.dtype), c, precision)
        # ... but they must not keep a tile alive (their P is not 0).
        grad, keep = _grad_tile(x, lse2, t, g, cols, exp_mode, transposed=False,
                                filter_eps=filter_eps, count_cols=cols < v if tail else None)
        return _add_if(keep, acc, lambda: common.dot_nn(grad.astype(e.dtype), c, precision))

    zeros = jnp.zeros(e.shape, jnp.float32)
    acc = common.chained_sum(n_full, functools.partial(step, tail=False), zeros, block_v)
    if has_tail:
        acc = acc + step(common.traced(n_full), zeros, tail=True)
    de_ref[...] = acc.astype(de_ref.dtype)


def _dc_kernel(e_ref, c_ref, lse2_ref, t_ref, g_ref, dc_ref, *, v, block_v, block_n, n_row_tiles,
               precision, exp_mode, filter_eps=None, onehot=True):
    j = pl.program_id(0)
    start = j * block_v
    cols = start + jnp.arange(block_v)
    col_ok = cols < v
    c = plgpu.load(c_ref.at[pl.ds(start, block_v), :], mask=col_ok[:, None], other=0.0)

    def step(i, acc):
        rows = pl.ds(i * block_n, block_n)
        e = e_ref[rows, :]
        xt = common.dot_nt(c, e, precision)  # [block_v, block_n]
        if filter_eps is None:
            # (Operand load order as it was measured: it changes Triton's pipelining.)
            if onehot:
                grad_t = _grad_tile(xt, lse2_ref[rows], t_ref[rows], g_ref[rows], cols, exp_mode,
                                    transposed=True)
            else:
                grad_t = _grad_tile(xt, lse2_ref[rows], None, g_ref[rows], cols, exp_mode,
                                    transposed=True, onehot=False)
            return acc + common.dot_nn(grad_t.astype(e.dtype), e, precision)
        grad_t, keep = _grad_tile(xt, lse2_ref[rows], t_ref[rows], g_ref[rows], cols, exp_mode,
                                  transposed=True, filter_eps=filter_eps, count_cols=col_ok)
        return _add_if(keep, acc, lambda: common.dot_nn(grad_t.astype(e.dtype), e, precision))

    acc = common.chained_sum(n_row_tiles, step, jnp.zeros(c.shape, jnp.float32), block_n)
    # Rows >= V of this tile are never stored.
    plgpu.store(dc_ref.at[pl.ds(start, block_v), :], acc.astype(dc_ref.dtype),
                mask=col_ok[:, None])


def _atomic_kernel(e_ref, c_ref, lse2_ref, t_ref, g_ref, dc_in_ref, de_ref, dc_ref, *, v, block_v,
                   n_tiles, precision, exp_mode, ordering, filter_eps=None):
    del dc_in_ref  # aliased with dc_ref (zero-initialised float32 accumulator)
    e = e_ref[...]
    lse2, t, g = lse2_ref[...], t_ref[...], g_ref[...]

    def step(j, acc):
        start = j * block_v
        cols = start + jnp.arange(block_v)
        c = plgpu.load(c_ref.at[pl.ds(start, block_v), :], mask=(cols < v)[:, None], other=0.0)
        x = common.dot_nt(e, c, precision)
        if filter_eps is None:
            grad = _grad_tile(x, lse2, t, g, cols, exp_mode, transposed=False, col_mask=cols < v)
            keep = None
        else:
            grad, keep = _grad_tile(x, lse2, t, g, cols, exp_mode, transposed=False,
                                    col_mask=cols < v, filter_eps=filter_eps)
        gq = grad.astype(e.dtype)

        def both():
            # dC rows of this tile: the buffer is padded to whole tiles, so no masked atomics.
            dc_part = lax.dot_general(gq, e, (((0,), (0,)), ((), ())), precision=precision,
                                      preferred_element_type=jnp.float32)
            atomics.atomic_add(dc_ref, (pl.ds(start, block_v), slice(None)), dc_part,
                               ordering=ordering)
            return common.dot_nn(gq, c, precision)

        return _add_if(keep, acc, both)

    acc = common.chained_sum(n_tiles, step, jnp.zeros(e.shape, jnp.float32), block_v)
    de_ref[...] = acc.astype(de_ref.dtype)


def grads(e_pad, c_pad, v, lse2, t, g, cfg: common.KernelConfig, *, interpret: bool,
          de_dtype=None, filter_eps: float | None = None, onehot: bool = True,
          want_de: bool = True):
    """(dE [Np, Dp] in ``de_dtype`` (default e's dtype), dC [V, Dp] in c's dtype) for padded
    inputs. Callers that sum dE over several catalog chunks ask for float32. ``filter_eps``:
    skip tiles whose max |P - onehot| is below it (module docstring); None: exact.
    ``onehot=False``: G = softmax * g without the target term (two-pass, unfiltered only).
    ``want_de=False`` (two-pass only): dE is None and its kernel is not run (the forward
    already accumulated it, ``KernelConfig.fused_de``).

    lse2: float32 [Np] log2-domain LSE; t: int32 [Np] (-1 where masked); g: float32 [Np]
    per-row cotangent (0 where masked). Np must be a multiple of ``cfg.bwd_block_n``.
    """
    n_pad, d_pad = e_pad.shape
    de_dtype = e_pad.dtype if de_dtype is None else de_dtype
    bn, bv = cfg.bwd_block_n, cfg.bwd_block_v
    n_tiles = pl.cdiv(v, bv)
    prec = common.dot_precision(e_pad.dtype)
    exp_mode = common.exp_mode(cfg, interpret)
    params = common.compiler_params(cfg.bwd_warps, cfg.bwd_stages)
    # Only passed when set, so that the unfiltered kernels are the very same partials as before.
    filt = {} if filter_eps is None else {"filter_eps": float(filter_eps)}
    if not onehot:  # the two-pass kernels without the target term (``ops`` adds it)
        if filter_eps is not None or cfg.bwd_mode != "two_pass":
            raise ValueError("onehot=False needs bwd_mode='two_pass' and no filter_eps")
        filt["onehot"] = False
    row_spec = pl.BlockSpec((bn, d_pad), lambda i: (i, 0))
    vec_spec = pl.BlockSpec((bn,), lambda i: (i,))
    full = pl.no_block_spec

    if cfg.bwd_mode == "atomic":
        if not want_de:
            raise ValueError("want_de=False needs bwd_mode='two_pass'")
        dc0 = jnp.zeros((n_tiles * bv, d_pad), jnp.float32)
        de, dc = pl.pallas_call(
            functools.partial(_atomic_kernel, v=v, block_v=bv, n_tiles=n_tiles, precision=prec,
                              exp_mode=exp_mode, ordering=cfg.atomics, **filt),
            grid=(n_pad // bn,),
            in_specs=[row_spec, full, vec_spec, vec_spec, vec_spec, full],
            out_specs=[row_spec, full],
            out_shape=[jax.ShapeDtypeStruct(e_pad.shape, de_dtype),
                       jax.ShapeDtypeStruct(dc0.shape, jnp.float32)],
            input_output_aliases={5: 1},
            compiler_params=params, interpret=interpret, name="cce_backward_atomic",
        )(e_pad, c_pad, lse2, t, g, dc0)
        return de, dc[:v].astype(c_pad.dtype)
    if cfg.bwd_mode != "two_pass":
        raise ValueError(f"bwd_mode={cfg.bwd_mode!r} is not 'two_pass' or 'atomic'")

    de = None
    if want_de:
        de = _de_call(e_pad, c_pad, v, lse2, t, g, cfg, interpret, de_dtype, **filt)
    dc = pl.pallas_call(
        functools.partial(_dc_kernel, v=v, block_v=bv, block_n=bn, n_row_tiles=n_pad // bn,
                          precision=prec, exp_mode=exp_mode, **filt),
        grid=(n_tiles,),
        in_specs=[full] * 5,
        out_specs=full,
        out_shape=jax.ShapeDtypeStruct(c_pad.shape, c_pad.dtype),
        compiler_params=params, interpret=interpret, name="cce_backward_dc",
    )(e_pad, c_pad, lse2, t, g)
    return de, dc


def _de_call(e_pad, c_pad, v, lse2, t, g, cfg: common.KernelConfig, interpret: bool, de_dtype,
             name="cce_backward_de", **filt):
    """The dE-owner kernel over row tiles of ``cfg.bwd_block_n`` (see ``grads``)."""
    n_pad, d_pad = e_pad.shape
    bn, bv = cfg.bwd_block_n, cfg.bwd_block_v
    n_full = v // bv
    row_spec = pl.BlockSpec((bn, d_pad), lambda i: (i, 0))
    vec_spec = pl.BlockSpec((bn,), lambda i: (i,))
    return pl.pallas_call(
        functools.partial(_de_kernel, v=v, block_v=bv, n_full=n_full,
                          has_tail=n_full != pl.cdiv(v, bv),
                          precision=common.dot_precision(e_pad.dtype),
                          exp_mode=common.exp_mode(cfg, interpret), **filt),
        grid=(n_pad // bn,),
        in_specs=[row_spec, pl.no_block_spec, vec_spec, vec_spec, vec_spec],
        out_specs=row_spec,
        out_shape=jax.ShapeDtypeStruct(e_pad.shape, de_dtype),
        compiler_params=common.compiler_params(cfg.bwd_warps, cfg.bwd_stages),
        interpret=interpret, name=name,
    )(e_pad, c_pad, lse2, t, g)


def softmax_mean(e_pad, c_pad, v, lse2, cfg: common.KernelConfig, *, interpret: bool):
    """float32 [Np, Dp]: sum_v softmax_rv c_v, i.e. the dE kernel with g = 1 and no target term
    (the fused forward's fallback when its target-shifted sums overflow, ``ops``)."""
    n_pad = e_pad.shape[0]
    return _de_call(e_pad, c_pad, v, lse2, jnp.full((n_pad,), -1, jnp.int32),
                    jnp.ones((n_pad,), jnp.float32), cfg, interpret, jnp.float32,
                    name="cce_softmax_mean", onehot=False)
