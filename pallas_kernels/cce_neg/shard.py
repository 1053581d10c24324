"""Per-shard CCE- kernels of vocabulary parallelism: ``shard_negatives_lse`` and
``shard_negatives_grads`` (public; ``pallas_kernels.vocab_parallel`` builds on them).

Row sharing only. Each program takes a tile of ``row_block`` rows and loops over the shard's
``n_k`` active slots; slot ``j`` of row ``i`` draws a *local* row of the shard's classifier
``c [r, D]`` from ``h = draw_hash(keys[i], slot_keys(j))``:

* uniform:    ``id = lo + mulhi32(h, span)`` over the shard's valid local rows ``[lo, lo + span)``;
* popularity: the per-shard alias table over all ``r`` local rows (column ``mulhi32(h, r)``).

A draw equal to the row's local target (``t = -1`` when the shard does not own it) is dropped;
a kept draw has the logit ``e . c[id] + (log_w - log_q[id])``. For uniform ``log_q`` is constant
over the valid rows, so the caller passes ``corr = log_w - log_q[lo]``; for popularity
``corr = log_w`` and the kernel gathers ``log_q[id]``.

Unlike the single-device kernels (``kernels.py``) there is no positive column and no
renormalisation: the forward returns the negatives-only log-sum-exp (``-inf`` where no draw was
kept), the backward takes the *global* LSE. The stream keys (one per global row, shard-salted
seed) come in as a ``uint32 [N]`` array, and the per-shard scalars (they depend on
``lax.axis_index``, so they are traced) as small arrays: ``ints = [lo, span, n_k, 0]`` int32 and
``corr`` float32[1].
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from pallas_kernels.cce_neg import sampling
from pallas_kernels.cce_neg.config import pow2, triton_width_ok
from pallas_kernels.cce_neg.kernels import (
    NEG_INIT,
    compiler_params,
    full_spec,
    masked_rows,
    pad,
    scatter_rows,
    split_tabs,
)


_DEFAULT_ROW_BLOCK = 8


def _static(rows_per_shard, sampler, row_block, interpret, num_warps):
    """Hashable kernel settings (functools.partial arguments of the kernels)."""
    return (int(rows_per_shard), sampler, int(row_block or _DEFAULT_ROW_BLOCK), bool(interpret),
            num_warps)


supports = triton_width_ok  # Whether the Triton kernels take rows of width D.


def check_shapes(d: int, row_block: int | None) -> None:
    """Raises a one-line ValueError where the Triton kernels cannot run (``row_block=None``:
    the default, 8 rows)."""
    row_block = _DEFAULT_ROW_BLOCK if row_block is None else row_block
    if not supports(d):
        raise ValueError(f"the CCE- Pallas kernels need D a power of two >= 16 (Triton blocks), "
                         f"got D={d}; use impl='xla'")
    if not (pow2(row_block) and row_block >= 8):
        raise ValueError(f"the CCE- Pallas kernels need row_block a power of two >= 8, got "
                         f"{row_block}; set SampledConfig(row_block=...)")


def _scalars(ints_ref, corr_ref):
    """(lo, span uint32, n_k, corr) read once per program."""
    return ints_ref[0], ints_ref[1].astype(jnp.uint32), ints_ref[2], corr_ref[0]


def _slot(rows_per_shard, sampler, keys, j, sc, tabs):
    """(ids int32[Bt], per-draw logit correction f32[Bt] or scalar) of slot j."""
    lo, span, _, corr = sc
    h = sampling.draw_hash(keys, sampling.slot_keys(j))
    if sampler == "uniform":
        return lo + sampling.mulhi32(h, span).astype(jnp.int32), corr
    prob_ref, alias_ref, logq_ref = tabs
    col = sampling.uniform_ids(h, rows_per_shard)
    ids = sampling.alias_pick(col, sampling.alias_coin(h), prob_ref[col], alias_ref[col])
    return ids, corr - logq_ref[ids]  # same order of operations as the XLA path


def _fwd_kernel(st, keys_ref, e_ref, t_ref, ints_ref, corr_ref, c_ref, *refs):
    rows_per_shard, sampler, _, _, _ = st
    tabs, (lse_ref,) = split_tabs(sampler, refs)
    keys, t = keys_ref[...], t_ref[...]
    ef = e_ref[...].astype(jnp.float32)
    sc = _scalars(ints_ref, corr_ref)

    def body(j, carry):
        m, l = carry
        ids, corr = _slot(rows_per_shard, sampler, keys, j, sc, tabs)
        s = jnp.sum(ef * c_ref[ids, :].astype(jnp.float32), axis=1) + corr
        s = jnp.where(ids != t, s, -jnp.inf)
        m_new = jnp.maximum(m, s)
        return m_new, l * jnp.exp(m - m_new) + jnp.exp(s - m_new)

    z = jnp.zeros(t.shape, jnp.float32)
    # Dynamic trip count n_k: shards with fewer draws than n_max do no masked work.
    m, l = jax.lax.fori_loop(0, sc[2], body, (z + NEG_INIT, z))
    lse_ref[...] = m + jnp.log(l)  # -inf where no draw was kept


def _bwd_kernel(st, keys_ref, e_ref, t_ref, g_ref, lse_ref, ints_ref, corr_ref, c_ref, *refs):
    rows_per_shard, sampler, _, interpret, _ = st
    tabs, (dc_in_ref, de_ref, dc_ref) = split_tabs(sampler, refs)
    del dc_in_ref  # aliased with dc_ref
    keys, t, g, lse = keys_ref[...], t_ref[...], g_ref[...], lse_ref[...]
    # Rows with a zero cotangent (masked, padding) neither gather nor scatter.
    valid = g != 0.0
    ef = e_ref[...].astype(jnp.float32)
    sc = _scalars(ints_ref, corr_ref)

    def body(j, de):
        ids, corr = _slot(rows_per_shard, sampler, keys, j, sc, tabs)
        cg = masked_rows(c_ref, ids, valid, interpret).astype(jnp.float32)
        s = jnp.sum(ef * cg, axis=1) + corr
        # where() before the product: exp may overflow on skipped rows and inf * 0 is NaN.
        p = jnp.where(valid & (ids != t), jnp.exp(s - lse) * g, 0.0)
        scatter_rows(dc_ref, ids, p[:, None] * ef, mask=valid, interpret=interpret)
        return de + p[:, None] * cg

    de = jax.lax.fori_loop(0, sc[2], body, jnp.zeros(ef.shape, jnp.float32))
    de_ref[...] = de


def shard_negatives_lse(keys, e, t_local, ints, corr, c, tables=None, *, rows_per_shard: int,
                        row_block: int | None = None, num_warps: int | None = None,
                        interpret: bool = False):
    """Negatives-only LSE f32[n] of this shard (natural log; -inf where no draw was kept).

    keys uint32[n]: stream keys of the rows; t_local int32[n]: local target row or -1;
    ints int32[4] = [lo, span, n_k, 0]; corr f32[1]; c [r, D]; tables: None (uniform) or, for
    popularity, (prob f32[r], alias int32[r], log_q f32[r]) of the shard. ``row_block`` (power
    of two >= 8, default 8) and ``num_warps`` (default 4, or 8 at D >= 256): launch settings.
    """
    sampler = "uniform" if tables is None else "popularity"
    st = _static(rows_per_shard, sampler, row_block, interpret, num_warps)
    n, d = e.shape
    bt = st[2]
    n_pad = -n % bt
    tabs = () if tables is None else tuple(tables)
    row = lambda: pl.BlockSpec((bt,), lambda i: (i,))  # noqa: E731
    lse = pl.pallas_call(
        functools.partial(_fwd_kernel, st),
        out_shape=jax.ShapeDtypeStruct((n + n_pad,), jnp.float32),
        grid=((n + n_pad) // bt,),
        in_specs=[row(), pl.BlockSpec((bt, d), lambda i: (i, 0)), row()]
        + [full_spec()] * (3 + len(tabs)),
        out_specs=row(),
        compiler_params=compiler_params(num_warps, None, d),
        interpret=interpret,
        name="cce_neg_shard_fwd",
    )(pad(keys, n_pad), pad(e, n_pad), pad(t_local, n_pad), ints, corr, c, *tabs)
    return lse[:n]


def shard_negatives_grads(keys, e, t_local, g, lse, ints, corr, c, tables=None, *,
                          rows_per_shard: int, dc_init=None, row_block: int | None = None,
                          num_warps: int | None = None, interpret: bool = False):
    """Negative-sample gradients of ``sum_i g_i loss_i`` given the global LSE:
    ``(dE f32[n, D], dC f32[r, D])`` (the positive term is the caller's). ``dc_init`` (f32
    [r, D], e.g. the positive term) is the buffer the atomics add into: no extra [r, D] pass.
    Other arguments as ``shard_negatives_lse``."""
    sampler = "uniform" if tables is None else "popularity"
    st = _static(rows_per_shard, sampler, row_block, interpret, num_warps)
    n, d = e.shape
    bt = st[2]
    n_pad = -n % bt
    tabs = () if tables is None else tuple(tables)
    row = lambda: pl.BlockSpec((bt,), lambda i: (i,))  # noqa: E731
    # Padding rows get g = 0: skipped.
    args = (pad(keys, n_pad), pad(e, n_pad), pad(t_local, n_pad), pad(g, n_pad),
            pad(lse, n_pad), ints, corr, c, *tabs,
            jnp.zeros(c.shape, jnp.float32) if dc_init is None else dc_init.astype(jnp.float32))
    de, dc = pl.pallas_call(
        functools.partial(_bwd_kernel, st),
        out_shape=(jax.ShapeDtypeStruct((n + n_pad, d), jnp.float32),
                   jax.ShapeDtypeStruct(c.shape, jnp.float32)),
        grid=((n + n_pad) // bt,),
        in_specs=[row(), pl.BlockSpec((bt, d), lambda i: (i, 0)), row(), row(), row()]
        + [full_spec()] * (3 + len(tabs) + 1),
        out_specs=(pl.BlockSpec((bt, d), lambda i: (i, 0)), full_spec()),
        input_output_aliases={len(args) - 1: 1},
        compiler_params=compiler_params(num_warps, None, d),
        interpret=interpret,
        name="cce_neg_shard_bwd",
    )(*args)
    return de[:n], dc
