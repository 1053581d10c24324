"""Pallas (Triton lowering) kernels for CCE- with negatives regenerated from the hash in-kernel.

* ``sharing="row"``: grid over tiles of ``row_block`` rows; a sequential loop over the ``n``
  slots hashes one id per row, gathers those ``row_block`` classifier rows and takes row-wise f32
  dot products (a gather problem, no tensor cores). Online logsumexp in registers.
* ``sharing="block"``: grid over tiles of ``block_rows`` rows sharing one set of ``n`` ids; a
  loop over chunks of ``neg_block`` ids gathers ``[neg_block, D]`` and computes the
  ``[block_rows, neg_block]`` logits on the tensor cores. The forward sums exponentials against
  each row's target logit in a tile (no running max; a running-max pass only for a tile whose
  sum overflows), with one FMA and one MUFU ex2 per logit.

Backward kernels recompute the logits, write ``dE`` per row tile and accumulate ``dC`` into a
float32 ``[V, D]`` buffer with relaxed atomic adds (``pallas_kernels.atomics``;
``interpret=True``: a sequential per-row update, because the interpret-mode discharge of
vector-indexed atomics drops duplicate indices). Row sharing with a scalar reduction runs the
one-pass kernel of ``fused.py`` instead of ``forward`` + ``backward``. The row-sharing backward
skips rows with a zero cotangent (masked rows).

The helpers without a leading underscore are shared with ``fused.py`` and ``shard.py``.
Per-row residuals are O(N): the stream keys, ``lse`` and ``shift`` (``lse`` minus the uniform
per-row correction). No ``[N, n]`` array exists anywhere.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plt

from pallas_kernels import atomics
from pallas_kernels.cce.common import LOG2E, exp2_shifted
from pallas_kernels.cce_neg import sampling
from pallas_kernels.cce_neg.config import Static, default_num_warps

NEG_INIT = -1e30  # finite running max: keeps exp(m_old - m_new) NaN-free when all are excluded
_dot = getattr(plt, "dot", None) or pl.dot


def compiler_params(num_warps: int | None, num_stages: int | None, d: int):
    """Triton launch settings; ``num_warps=None``: ``config.default_num_warps(d)``."""
    warps = default_num_warps(d) if num_warps is None else num_warps
    return plt.CompilerParams(num_warps=warps, num_stages=num_stages)


def full_spec():
    return pl.BlockSpec()  # whole array, indexed (gathered) inside the kernel


def tile(st: Static) -> int:
    return st.row_block if st.sharing == "row" else st.block_rows


def draw(st: Static, h, prob_ref, alias_ref):
    """ids (int32, shape of h) from draw hashes, inside a kernel."""
    col = sampling.uniform_ids(h, st.num_items)
    if st.sampler == "uniform":
        return col
    return sampling.alias_pick(col, sampling.alias_coin(h), prob_ref[col], alias_ref[col])


def slot_key(j):
    return sampling.slot_keys(j)


# ------------------------------------------------------------------ row sharing


def row_logits(st, keys, ef, t, c_ref, tabs, j, valid=None):
    """Logits of slot j for every row of the tile: (s f32[Bt] incl. sample correction, keep, ids, cg).

    Rows where ``valid`` is False are not gathered (their ``cg`` is 0).
    """
    prob_ref, alias_ref, logq_ref = tabs
    ids = draw(st, sampling.draw_hash(keys, slot_key(j)), prob_ref, alias_ref)
    keep = ids != t
    cg = c_ref[ids, :] if valid is None else masked_rows(c_ref, ids, valid, st.interpret)
    cg = cg.astype(jnp.float32)
    s = jnp.sum(ef * cg, axis=1)
    if st.sampler == "popularity":
        s = s - (jnp.float32(math.log(st.num_negatives)) + logq_ref[ids])
    return s, keep, ids, cg


def finish_lse(st, s_pos, m, l, cnt):
    """(lse, shift): lse over the positive and the corrected negatives; shift = lse - row corr."""
    lse_neg = m + jnp.log(l)  # -inf when every negative was excluded
    if st.sampler == "uniform":
        corr = jnp.float32(math.log(st.num_items - 1)) - jnp.log(jnp.maximum(cnt, 1.0))
    else:
        corr = jnp.zeros_like(s_pos)
    lse_neg = lse_neg + corr
    hi = jnp.maximum(s_pos, lse_neg)
    lse = hi + jnp.log(jnp.exp(s_pos - hi) + jnp.exp(lse_neg - hi))
    return lse, lse - corr


def split_tabs(sampler: str, refs):
    """(popularity table refs or three Nones, the other refs) of a kernel's trailing refs."""
    if sampler == "popularity":
        return refs[:3], refs[3:]
    return (None, None, None), refs


def _row_fwd_kernel(st, keys_ref, e_ref, t_ref, c_ref, *refs):
    tabs, (lse_ref, shift_ref, spos_ref) = split_tabs(st.sampler, refs)
    keys = keys_ref[...]
    t = t_ref[...]
    ef = e_ref[...].astype(jnp.float32)
    s_pos = jnp.sum(ef * c_ref[t, :].astype(jnp.float32), axis=1)

    def body(j, carry):
        m, l, cnt = carry
        s, keep, _, _ = row_logits(st, keys, ef, t, c_ref, tabs, j)
        s = jnp.where(keep, s, -jnp.inf)
        m_new = jnp.maximum(m, s)
        l = l * jnp.exp(m - m_new) + jnp.exp(s - m_new)
        return m_new, l, cnt + keep.astype(jnp.float32)

    z = jnp.zeros_like(s_pos)
    m, l, cnt = jax.lax.fori_loop(0, st.num_negatives, body, (z + NEG_INIT, z, z))
    lse, shift = finish_lse(st, s_pos, m, l, cnt)
    lse_ref[...] = lse
    shift_ref[...] = shift
    spos_ref[...] = s_pos


def scatter_rows(dc_ref, ids, val, mask=None, *, interpret: bool):
    """dc[ids[i], :] += val[i, :] for every i (duplicates summed; rows where not mask skipped).

    In interpret mode masked atomics are unsupported: rows are added one by one, and masked
    rows must carry zeros in ``val``.
    """
    val = val.astype(dc_ref.dtype)
    if not interpret:
        # Triton wants the mask in the value's full shape.
        full_mask = None if mask is None else jnp.broadcast_to(mask[:, None], val.shape)
        atomics.atomic_add(dc_ref, (ids, slice(None)), val, mask=full_mask)
        return

    def one(i, _):
        atomics.atomic_add(dc_ref, (ids[i], slice(None)), val[i])
        return _

    jax.lax.fori_loop(0, ids.shape[0], one, 0)


def _row_bwd_kernel(st, keys_ref, e_ref, t_ref, g_ref, lse_ref, shift_ref, c_ref, *refs):
    tabs, (dc_in_ref, de_ref, dc_ref) = split_tabs(st.sampler, refs)
    del dc_in_ref  # aliased with dc_ref
    keys = keys_ref[...]
    t, g = t_ref[...], g_ref[...]
    lse, shift = lse_ref[...], shift_ref[...]
    # Rows with a zero cotangent (masked rows, padding) neither gather nor scatter: in padded
    # training batches that skips their HBM traffic. Their contributions are exactly 0.
    valid = g != 0.0
    ef = e_ref[...].astype(jnp.float32)
    c_pos = masked_rows(c_ref, t, valid, st.interpret).astype(jnp.float32)
    s_pos = jnp.sum(ef * c_pos, axis=1)
    g_pos = (jnp.exp(s_pos - lse) - 1.0) * g
    scatter_rows(dc_ref, t, g_pos[:, None] * ef, mask=valid, interpret=st.interpret)

    def body(j, de):
        s, keep, ids, cg = row_logits(st, keys, ef, t, c_ref, tabs, j, valid)
        gj = jnp.where(keep, jnp.exp(s - shift), 0.0) * g
        scatter_rows(dc_ref, ids, gj[:, None] * ef, mask=valid, interpret=st.interpret)
        return de + gj[:, None] * cg

    de = jax.lax.fori_loop(0, st.num_negatives, body, g_pos[:, None] * c_pos)
    de_ref[...] = de.astype(de_ref.dtype)


def masked_rows(ref, ids, mask, interpret: bool):
    """ref[ids, :] where mask (rows elsewhere are not read on the GPU; zeros)."""
    if interpret:
        return jnp.where(mask[:, None], ref[ids, :], 0)
    shape = (ids.shape[0], ref.shape[1])
    return plt.load(ref.at[ids, :], mask=jnp.broadcast_to(mask[:, None], shape), other=0)


# ------------------------------------------------------------------ shared negatives


def _exp_tile(st, s, shift):
    """exp(s - shift) of a logit tile (``shift`` [Bt, 1]; -inf logits give 0). On the GPU one
    FMA and one MUFU ex2 per logit (``cce.common.exp2_shifted``): the shared-negative kernels
    are bounded by instruction issue, and ``jnp.exp`` lowers to libdevice's ``expf`` (range
    reduction around the ex2). The interpreter takes ``jnp.exp``."""
    if st.interpret:
        return jnp.exp(s - shift)
    return exp2_shifted(s, shift * jnp.float32(LOG2E), "fma")


def _n_chunks(st):
    return -(-st.num_negatives // st.neg_block)


def _block_logits(st, key, e, t, c_ref, tabs, k):
    """Chunk k: (s f32[Bt, Jc] incl. sample correction, keep [Bt, Jc], ids [Jc], cg [Jc, D])."""
    prob_ref, alias_ref, logq_ref = tabs
    jc = st.neg_block
    j = k * jc + jax.lax.broadcasted_iota(jnp.int32, (jc,), 0)
    ids = draw(st, sampling.draw_hash(key, slot_key(j)), prob_ref, alias_ref)
    cg = c_ref[ids, :]
    prec = jax.lax.Precision.HIGHEST if e.dtype == jnp.float32 else None
    s = _dot(e, cg, trans_b=True, precision=prec).astype(jnp.float32)
    if st.sampler == "popularity":
        s = s - (jnp.float32(math.log(st.num_negatives)) + logq_ref[ids])[None, :]
    keep = (ids[None, :] != t[:, None]) & (j < st.num_negatives)[None, :]
    return s, keep, ids, cg


def _block_fwd_kernel(st, key_ref, e_ref, t_ref, c_ref, *refs):
    tabs, (lse_ref, shift_ref, spos_ref) = split_tabs(st.sampler, refs)
    key, t, e = key_ref[...], t_ref[...], e_ref[...]
    ef = e.astype(jnp.float32)
    s_pos = jnp.sum(ef * c_ref[t, :].astype(jnp.float32), axis=1)
    tile = jnp.zeros((e.shape[0], st.neg_block), jnp.float32)

    # Exponentials against each row's own target logit, summed as [Bt, Jc] tiles: no running
    # max and no cross-lane reduction per chunk (this kernel is bounded by instruction issue).
    # The sum overflows only where a kept logit exceeds the target's by
    # about 88; the tile is then redone with a running max below.
    def shifted(k, carry):
        l, cnt = carry
        s, keep, _, _ = _block_logits(st, key, e, t, c_ref, tabs, k)
        return (l + jnp.where(keep, _exp_tile(st, s, s_pos[:, None]), 0.0),
                cnt + jnp.where(keep, 1.0, 0.0))

    l, cnt = jax.lax.fori_loop(0, _n_chunks(st), shifted, (tile, tile))
    l, cnt = jnp.sum(l, axis=1), jnp.sum(cnt, axis=1)
    lse, shift = finish_lse(st, s_pos, s_pos, l, cnt)
    lse_ref[...] = lse
    shift_ref[...] = shift
    spos_ref[...] = s_pos

    @pl.when(jnp.max(l) == jnp.inf)
    def _running_max():
        def body(k, carry):
            m, l = carry
            s, keep, _, _ = _block_logits(st, key, e, t, c_ref, tabs, k)
            s = jnp.where(keep, s, -jnp.inf)
            m_new = jnp.maximum(m, jnp.max(s, axis=1))
            return m_new, l * jnp.exp(m - m_new) + jnp.sum(_exp_tile(st, s, m_new[:, None]), axis=1)

        z = jnp.zeros_like(s_pos)
        m, l_max = jax.lax.fori_loop(0, _n_chunks(st), body, (z + NEG_INIT, z))
        lse, shift = finish_lse(st, s_pos, m, l_max, cnt)
        lse_ref[...] = lse
        shift_ref[...] = shift


def _block_bwd_kernel(st, key_ref, e_ref, t_ref, g_ref, lse_ref, shift_ref, c_ref, *refs):
    tabs, (dc_in_ref, de_ref, dc_ref) = split_tabs(st.sampler, refs)
    del dc_in_ref
    key, t, g, e = key_ref[...], t_ref[...], g_ref[...], e_ref[...]
    lse, shift = lse_ref[...], shift_ref[...]
    ef = e.astype(jnp.float32)
    c_pos = c_ref[t, :].astype(jnp.float32)
    g_pos = (jnp.exp(jnp.sum(ef * c_pos, axis=1) - lse) - 1.0) * g
    scatter_rows(dc_ref, t, g_pos[:, None] * ef, interpret=st.interpret)
    prec = jax.lax.Precision.HIGHEST if e.dtype == jnp.float32 else None

    def body(k, de):
        s, keep, ids, cg = _block_logits(st, key, e, t, c_ref, tabs, k)
        gs = (jnp.where(keep, _exp_tile(st, s, shift[:, None]), 0.0) * g[:, None]).astype(e.dtype)
        dc_chunk = _dot(gs, e, trans_a=True, precision=prec).astype(jnp.float32)  # [Jc, D]
        scatter_rows(dc_ref, ids, dc_chunk, interpret=st.interpret)
        return de + _dot(gs, cg, precision=prec).astype(jnp.float32)

    de = jax.lax.fori_loop(0, _n_chunks(st), body, g_pos[:, None] * c_pos)
    de_ref[...] = de.astype(de_ref.dtype)


# ------------------------------------------------------------------ wrappers


def tables(st, table):
    """The popularity table's arrays as kernel inputs (none for uniform sampling)."""
    return () if st.sampler == "uniform" else (table.prob, table.alias, table.log_q)


def keys_for(st, seed_u32, n_pad_rows):
    """uint32 stream keys: one per row (row sharing) or per block of ``block_rows`` rows."""
    bt = tile(st)
    if st.sharing == "row":
        streams = jnp.arange(n_pad_rows, dtype=jnp.uint32)
    else:
        streams = jnp.arange(n_pad_rows // bt, dtype=jnp.uint32)
    return sampling.stream_keys(seed_u32, streams, st.sharing)


def key_spec(st):
    bt = tile(st)
    if st.sharing == "row":
        return pl.BlockSpec((bt,), lambda i: (i,))
    return pl.BlockSpec((1,), lambda i: (i,))


def pad(x, n_pad):
    """x with ``n_pad`` zero rows appended."""
    return jnp.pad(x, [(0, n_pad)] + [(0, 0)] * (x.ndim - 1)) if n_pad else x


def forward(st: Static, e, c, t, seed_u32, table):
    """Returns ``(lse f32[N], s_pos f32[N], shift f32[N])``."""
    n_rows, d = e.shape
    bt = tile(st)
    n_pad = -n_rows % bt
    np_rows = n_rows + n_pad
    tabs = tables(st, table)
    row = lambda: pl.BlockSpec((bt,), lambda i: (i,))
    kernel = _row_fwd_kernel if st.sharing == "row" else _block_fwd_kernel
    out = jax.ShapeDtypeStruct((np_rows,), jnp.float32)
    lse, shift, s_pos = pl.pallas_call(
        functools.partial(kernel, st),
        out_shape=(out, out, out),
        grid=(np_rows // bt,),
        in_specs=[key_spec(st), pl.BlockSpec((bt, d), lambda i: (i, 0)), row(), full_spec()]
        + [full_spec() for _ in tabs],
        out_specs=(row(), row(), row()),
        compiler_params=compiler_params(st.num_warps, st.num_stages, d),
        interpret=st.interpret,
        name=f"cce_neg_fwd_{st.sharing}",
    )(keys_for(st, seed_u32, np_rows), pad(e, n_pad), pad(t, n_pad), c, *tabs)
    return lse[:n_rows], s_pos[:n_rows], shift[:n_rows]


def backward(st: Static, e, c, t, g_rows, seed_u32, table, lse, shift):
    """Gradients of ``sum_r g_rows[r] * loss_r``: ``(dE [N, D] in e.dtype, dC [V, D] float32)``."""
    n_rows, d = e.shape
    bt = tile(st)
    n_pad = -n_rows % bt
    np_rows = n_rows + n_pad
    tabs = tables(st, table)
    row = lambda: pl.BlockSpec((bt,), lambda i: (i,))
    kernel = _row_bwd_kernel if st.sharing == "row" else _block_bwd_kernel
    args = (keys_for(st, seed_u32, np_rows), pad(e, n_pad), pad(t, n_pad), pad(g_rows, n_pad),
            pad(lse, n_pad), pad(shift, n_pad), c, *tabs, jnp.zeros(c.shape, jnp.float32))
    de, dc = pl.pallas_call(
        functools.partial(kernel, st),
        out_shape=(jax.ShapeDtypeStruct((np_rows, d), e.dtype),
                   jax.ShapeDtypeStruct(c.shape, jnp.float32)),
        grid=(np_rows // bt,),
        in_specs=[key_spec(st), pl.BlockSpec((bt, d), lambda i: (i, 0)), row(), row(), row(),
                  row(), full_spec()] + [full_spec() for _ in tabs] + [full_spec()],
        out_specs=(pl.BlockSpec((bt, d), lambda i: (i, 0)), full_spec()),
        input_output_aliases={len(args) - 1: 1},
        compiler_params=compiler_params(st.num_warps, st.num_stages, d),
        interpret=st.interpret,
        name=f"cce_neg_bwd_{st.sharing}",
    )(*args)
    return de[:n_rows], dc
