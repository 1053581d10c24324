"""Pallas (Triton lowering) kernels for CCE- with negatives regenerated from the hash in-kernel.

* ``sharing="row"``: grid over tiles of ``row_block`` rows; a sequential loop over the ``n``
  slots hashes one id per row, gathers those ``row_block`` classifier rows and takes row-wise f32
  dot products (a gather problem, no tensor cores). Online logsumexp in registers.
* ``sharing="block"/"batch"``: grid over tiles of ``block_rows`` rows sharing one set of ``n``
  ids; a loop over chunks of ``neg_block`` ids gathers ``[neg_block, D]`` and computes the
  ``[block_rows, neg_block]`` logits on the tensor cores. The forward sums exponentials against
  each row's target logit in a tile (no running max; a running-max pass only for a tile whose
  sum overflows), with one FMA and one MUFU ex2 per logit.

Backward kernels recompute the logits, write ``dE`` per row tile and accumulate ``dC`` into a
``[V, D]`` buffer (float32, or bfloat16 with ``dc_accum``) with relaxed atomic adds
(``pallas_kernels.atomics``; ``interpret=True``: a sequential per-row update, because the
interpret-mode discharge of vector-indexed atomics drops duplicate indices). With a bfloat16
buffer the positive (target) terms are summed in float32 after the kernels
(``add_target_term``). Row sharing with a scalar reduction runs the one-pass kernel of
``fused.py`` instead of ``forward`` + ``backward``. The row-sharing backward skips rows with a zero cotangent (masked rows);
``dc_part_items > 0`` selects the item-partitioned variant (measured slower, see
docs/perf_sampled.md).

Uniform row sharing with ``row_sampling="permutation"`` (opt-in; ``sampling.py``) has a
backward without atomics: a dE kernel over row tiles (gathers C, as the forward) and a dC kernel
over item tiles that, for each slot, inverts the slot's permutation to find the row that drew
each item and gathers that row of E (E is N x D: small enough to be served from L2). The
positive (target) term of dC is added outside, sorted per target (``cce.ops``). Every dC row is
a fixed-order float32 sum, so the gradients are deterministic, and no float32 [V, D] buffer is
needed.

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
from pallas_kernels.cce_neg.config import Static

_NEG_INIT = -1e30  # finite running max: keeps exp(m_old - m_new) NaN-free when all are excluded
_dot = getattr(plt, "dot", None) or pl.dot


def _compiler_params(st: Static, d: int):
    warps = st.num_warps
    # (shard_kernels passes its own ShardStatic, which has no row sampling)
    if warps is None and isinstance(st, Static) and _perm(st):  # H100, D = 128: perf_sampled.md
        warps = 2
    if warps is None:  # measured on an H200 (docs/perf_sampled.md): 8 warps pay off at D >= 256
        warps = 8 if d >= 256 else 4
    return plt.CompilerParams(num_warps=warps, num_stages=st.num_stages)


def _full_spec():
    return pl.BlockSpec()  # whole array, indexed (gathered) inside the kernel


def _tile(st: Static) -> int:
    return st.row_block if st.sharing == "row" else st.block_rows


def _draw(st: Static, h, prob_ref, alias_ref):
    """ids (int32, shape of h) from draw hashes, inside a kernel."""
    col = sampling.uniform_ids(h, st.num_items)
    if st.sampler == "uniform":
        return col
    return sampling.alias_pick(col, sampling.alias_coin(h), prob_ref[col], alias_ref[col])


def _slot_key(j):
    return sampling.slot_keys(j)


def _perm(st: Static) -> bool:
    return sampling.uses_permutation(st.sampler, st.sharing, st.row_sampling)


# ------------------------------------------------------------------ row sharing


def _row_setup(st: Static, keys):
    """(keys, rows) of a row-sharing kernel (call at its top level: the interpreter has no
    program_id in loops). The permutation sampler takes one scalar key (every row holds it) and
    the tile's global rows (uint32); the hash takes the per-row keys and no rows."""
    if not _perm(st):
        return keys, None
    bt = st.row_block
    rows = (pl.program_id(0) * bt + jnp.arange(bt, dtype=jnp.int32)).astype(jnp.uint32)
    return jnp.max(keys), rows


def _row_logits(st, keys, ef, t, c_ref, tabs, j, valid=None, rows=None):
    """Logits of slot j for every row of the tile: (s f32[Bt] incl. sample correction, keep, ids, cg).

    Rows where ``valid`` is False are not gathered (their ``cg`` is 0). With the permutation
    sampler ``keys`` is its scalar key and ``rows`` the tile's global rows (``_row_setup``).
    """
    prob_ref, alias_ref, logq_ref = tabs
    if _perm(st):
        ids = sampling.perm_ids(keys, rows, j, st.num_items)
        drawn = ids >= 0  # -1: the permutation landed past the catalog, a dropped draw
        valid = drawn if valid is None else valid & drawn
        keep = (ids != t) & drawn
        ids = jnp.maximum(ids, 0)
    else:
        ids = _draw(st, sampling.draw_hash(keys, _slot_key(j)), prob_ref, alias_ref)
        keep = ids != t
    cg = c_ref[ids, :] if valid is None else _masked_rows(st, c_ref, ids, valid)
    cg = cg.astype(jnp.float32)
    s = jnp.sum(ef * cg, axis=1)
    if st.sampler == "popularity":
        s = s - (jnp.float32(math.log(st.num_negatives)) + logq_ref[ids])
    return s, keep, ids, cg


def _finish_lse(st, s_pos, m, l, cnt):
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


def _split_tabs(st, refs):
    if st.sampler == "popularity":
        return refs[:3], refs[3:]
    return (None, None, None), refs


def _row_fwd_kernel(st, keys_ref, e_ref, t_ref, c_ref, *refs):
    tabs, (lse_ref, shift_ref, spos_ref) = _split_tabs(st, refs)
    keys, rows = _row_setup(st, keys_ref[...])
    t = t_ref[...]
    ef = e_ref[...].astype(jnp.float32)
    s_pos = jnp.sum(ef * c_ref[t, :].astype(jnp.float32), axis=1)

    def body(j, carry):
        m, l, cnt = carry
        s, keep, _, _ = _row_logits(st, keys, ef, t, c_ref, tabs, j, rows=rows)
        s = jnp.where(keep, s, -jnp.inf)
        m_new = jnp.maximum(m, s)
        l = l * jnp.exp(m - m_new) + jnp.exp(s - m_new)
        return m_new, l, cnt + keep.astype(jnp.float32)

    z = jnp.zeros_like(s_pos)
    m, l, cnt = jax.lax.fori_loop(0, st.num_negatives, body, (z + _NEG_INIT, z, z))
    lse, shift = _finish_lse(st, s_pos, m, l, cnt)
    lse_ref[...] = lse
    shift_ref[...] = shift
    spos_ref[...] = s_pos


def _scatter_rows(st, dc_ref, ids, val, mask=None):
    """dc[ids[i], :] += val[i, :] for every i (duplicates summed; rows where not mask skipped).

    In interpret mode masked atomics are unsupported: rows are added one by one, and masked
    rows must carry zeros in ``val``.
    """
    val = val.astype(dc_ref.dtype)
    if not st.interpret:
        # Triton wants the mask in the value's full shape.
        full_mask = None if mask is None else jnp.broadcast_to(mask[:, None], val.shape)
        atomics.atomic_add(dc_ref, (ids, slice(None)), val, mask=full_mask, ordering=st.atomics)
        return

    def one(i, _):
        atomics.atomic_add(dc_ref, (ids[i], slice(None)), val[i], ordering=st.atomics)
        return _

    jax.lax.fori_loop(0, ids.shape[0], one, 0)


def target_term_outside(st) -> bool:
    """Whether the positive (target) term of dC is left to ``add_target_term`` (after the
    kernels) instead of the atomics: with a bfloat16 dC buffer. A popular target's terms
    ``g_pos e_r`` share a sign, so a bf16 running sum of them stops growing after ~256 of
    them (each add rounds to 8 bits); summed per target in float32 they are rounded once."""
    return st.dc_accum != "float32"


def add_target_term(st, dc, e, c, t, g_rows, lse, loss=None):
    """``dc`` plus, per target item, the float32 sum of ``g_pos_r e_r`` (where
    ``target_term_outside``; otherwise ``dc`` unchanged). ``g_pos = (exp(s_pos - lse) - 1) g``;
    ``loss = lse - s_pos`` where the caller has it, else ``s_pos`` is recomputed (O(N D))."""
    if not target_term_outside(st):
        return dc
    from pallas_kernels.cce.ops import _target_term_into_dc

    if loss is None:
        ef = e.astype(jnp.float32)
        loss = lse - jnp.sum(ef * c[t].astype(jnp.float32), axis=1)
    g_pos = (jnp.exp(-loss) - 1.0) * g_rows
    return _target_term_into_dc(dc, e, jnp.where(g_rows != 0, t, -1), -g_pos)


def _row_bwd_kernel(st, keys_ref, e_ref, t_ref, g_ref, lse_ref, shift_ref, c_ref, *refs):
    tabs, (dc_in_ref, de_ref, dc_ref) = _split_tabs(st, refs)
    del dc_in_ref  # aliased with dc_ref
    keys, rows = _row_setup(st, keys_ref[...])
    t, g = t_ref[...], g_ref[...]
    lse, shift = lse_ref[...], shift_ref[...]
    # Rows with a zero cotangent (masked rows, padding) neither gather nor scatter: in padded
    # training batches that skips their HBM traffic. Their contributions are exactly 0.
    valid = g != 0.0
    ef = e_ref[...].astype(jnp.float32)
    c_pos = _masked_rows(st, c_ref, t, valid).astype(jnp.float32)
    s_pos = jnp.sum(ef * c_pos, axis=1)
    g_pos = (jnp.exp(s_pos - lse) - 1.0) * g
    if not target_term_outside(st):
        _scatter_rows(st, dc_ref, t, g_pos[:, None] * ef, mask=valid)

    def body(j, de):
        s, keep, ids, cg = _row_logits(st, keys, ef, t, c_ref, tabs, j, valid, rows)
        gj = jnp.where(keep, jnp.exp(s - shift), 0.0) * g
        _scatter_rows(st, dc_ref, ids, gj[:, None] * ef, mask=valid)
        return de + gj[:, None] * cg

    de = jax.lax.fori_loop(0, st.num_negatives, body, g_pos[:, None] * c_pos)
    de_ref[...] = de.astype(de_ref.dtype)


def _row_de_kernel(st, keys_ref, e_ref, t_ref, g_ref, lse_ref, shift_ref, c_ref, *refs):
    """Partitioned backward, part 1: dE per row tile, and the (O(N D)) positive dC term."""
    tabs, (dc_in_ref, de_ref, dc_ref) = _split_tabs(st, refs)
    del dc_in_ref
    keys, rows = _row_setup(st, keys_ref[...])
    t, g = t_ref[...], g_ref[...]
    lse, shift = lse_ref[...], shift_ref[...]
    ef = e_ref[...].astype(jnp.float32)
    c_pos = c_ref[t, :].astype(jnp.float32)
    g_pos = (jnp.exp(jnp.sum(ef * c_pos, axis=1) - lse) - 1.0) * g
    if not target_term_outside(st):
        _scatter_rows(st, dc_ref, t, g_pos[:, None] * ef)
    de = _row_de(st, keys, rows, ef, t, g, shift, c_ref, tabs, g_pos[:, None] * c_pos)
    de_ref[...] = de.astype(de_ref.dtype)


def _row_de(st, keys, rows, ef, t, g, shift, c_ref, tabs, de0, valid=None):
    """float32 dE of a row tile: ``de0`` (the positive term) plus softmax * g * c of every kept
    negative (gathers only; rows where ``valid`` is False are not gathered)."""
    def body(j, de):
        s, keep, _, cg = _row_logits(st, keys, ef, t, c_ref, tabs, j, valid, rows)
        return de + (jnp.where(keep, jnp.exp(s - shift), 0.0) * g)[:, None] * cg

    return jax.lax.fori_loop(0, st.num_negatives, body, de0)


def _row_dc_part_kernel(st, n_tiles, keys_ref, e_ref, t_ref, g_ref, shift_ref, c_ref, *refs):
    """Partitioned backward, part 2: program ``pid`` scatters the negatives of row tile
    ``pid % n_tiles`` whose ids fall in item partition ``pid // n_tiles``.

    Programs run roughly in pid order, so at any time the atomics of the whole GPU hit one
    partition of dC (and the gathers one partition of C), sized to stay in L2: the f32
    read-modify-writes then cost L2 rather than HBM traffic. Slots with no id in the partition
    skip all work but the hash.
    """
    tabs, (dc_in_ref, dc_ref) = _split_tabs(st, refs)
    del dc_in_ref
    prob_ref, alias_ref, logq_ref = tabs
    lo = (pl.program_id(0) // n_tiles) * st.dc_part_items
    keys, t, g, shift = keys_ref[...], t_ref[...], g_ref[...], shift_ref[...]
    ef = e_ref[...].astype(jnp.float32)

    def body(j, _):
        ids = _draw(st, sampling.draw_hash(keys, _slot_key(j)), prob_ref, alias_ref)
        active = (ids != t) & (ids >= lo) & (ids < lo + st.dc_part_items) & (g != 0.0)

        def step():
            cg = _masked_rows(st, c_ref, ids, active).astype(jnp.float32)
            s = jnp.sum(ef * cg, axis=1)
            if st.sampler == "popularity":
                s = s - (jnp.float32(math.log(st.num_negatives)) + logq_ref[ids])
            gj = jnp.where(active, jnp.exp(s - shift) * g, 0.0)
            _scatter_rows(st, dc_ref, ids, gj[:, None] * ef, mask=active)

        jax.lax.cond(jnp.max(active.astype(jnp.int32)) > 0, step, lambda: None)
        return _

    jax.lax.fori_loop(0, st.num_negatives, body, 0)


def _masked_rows(st, ref, ids, mask):
    """ref[ids, :] where mask (rows elsewhere are not read on the GPU; zeros)."""
    if st.interpret:
        return jnp.where(mask[:, None], ref[ids, :], 0)
    shape = (ids.shape[0], ref.shape[1])
    return plt.load(ref.at[ids, :], mask=jnp.broadcast_to(mask[:, None], shape), other=0)


# ------------------------------------------------------------------ row sharing, permutation


def _perm_de_kernel(st, keys_ref, e_ref, t_ref, g_ref, lse_ref, shift_ref, c_ref, de_ref,
                    gpos_ref):
    """dE of a row tile (gathers only) and the rows' positive-term weights g_pos (for dC)."""
    keys, rows = _row_setup(st, keys_ref[...])
    t, g = t_ref[...], g_ref[...]
    lse, shift = lse_ref[...], shift_ref[...]
    valid = g != 0.0  # masked rows: no gathers, zero gradients
    ef = e_ref[...].astype(jnp.float32)
    c_pos = _masked_rows(st, c_ref, t, valid).astype(jnp.float32)
    g_pos = jnp.where(valid, (jnp.exp(jnp.sum(ef * c_pos, axis=1) - lse) - 1.0) * g, 0.0)
    de = _row_de(st, keys, rows, ef, t, g, shift, c_ref, (None, None, None),
                 g_pos[:, None] * c_pos, valid)
    de_ref[...] = de.astype(de_ref.dtype)
    gpos_ref[...] = g_pos


def _perm_dc_kernel(st, n_rows, n_blocks, key_ref, e_ref, t_ref, g_ref, shift_ref, c_ref,
                    dc_ref):
    """dC (negative terms) of a tile of ``dc_block`` items: for each slot j and row block b the
    inverse permutation names the one row that drew each item; gather it, recompute the logit,
    accumulate softmax * g * e_row in float32. Rows past the batch, masked rows (g = 0) and rows
    whose target is the item (excluded negatives) contribute nothing."""
    bv = st.dc_block
    items = pl.program_id(0) * bv + jnp.arange(bv, dtype=jnp.int32)
    item_ok = items < st.num_items
    items_u = jnp.where(item_ok, items, 0).astype(jnp.uint32)
    c = _masked_rows(st, c_ref, jnp.where(item_ok, items, 0), item_ok).astype(jnp.float32)
    key = jnp.max(key_ref[...])

    def rows_of(k):
        # (lax.div/rem: jnp's floor-mod sign fix-up does not lower to Triton; k >= 0)
        j, b = (k, 0) if n_blocks == 1 else (jax.lax.div(k, n_blocks), jax.lax.rem(k, n_blocks))
        return sampling.perm_rows(key, items_u, jnp.asarray(j).astype(jnp.uint32), b,
                                  st.num_items)

    def body(k, acc):
        rows = rows_of(k)
        in_batch = item_ok & (rows < n_rows)
        r = jnp.where(in_batch, rows, 0)
        # The row gathers do not wait for g and t (they only zero the weight).
        g, t, shift = g_ref[r], t_ref[r], shift_ref[r]
        er = _masked_rows(st, e_ref, r, in_batch).astype(jnp.float32)
        ok = in_batch & (g != 0.0) & (t != items)
        w = jnp.where(ok, jnp.exp(jnp.sum(er * c, axis=1) - shift) * g, 0.0)
        return acc + w[:, None] * er

    acc = jax.lax.fori_loop(0, st.num_negatives * n_blocks, body,
                            jnp.zeros(c.shape, jnp.float32))
    if st.interpret:
        dc_ref[pl.ds(pl.program_id(0) * bv, bv), :] = acc.astype(dc_ref.dtype)
    else:
        plt.store(dc_ref.at[pl.ds(pl.program_id(0) * bv, bv), :], acc.astype(dc_ref.dtype),
                  mask=jnp.broadcast_to(item_ok[:, None], acc.shape))


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
    ids = _draw(st, sampling.draw_hash(key, _slot_key(j)), prob_ref, alias_ref)
    cg = c_ref[ids, :]
    prec = jax.lax.Precision.HIGHEST if e.dtype == jnp.float32 else None
    s = _dot(e, cg, trans_b=True, precision=prec).astype(jnp.float32)
    if st.sampler == "popularity":
        s = s - (jnp.float32(math.log(st.num_negatives)) + logq_ref[ids])[None, :]
    keep = (ids[None, :] != t[:, None]) & (j < st.num_negatives)[None, :]
    return s, keep, ids, cg


def _block_fwd_kernel(st, key_ref, e_ref, t_ref, c_ref, *refs):
    tabs, (lse_ref, shift_ref, spos_ref) = _split_tabs(st, refs)
    key, t, e = key_ref[...], t_ref[...], e_ref[...]
    ef = e.astype(jnp.float32)
    s_pos = jnp.sum(ef * c_ref[t, :].astype(jnp.float32), axis=1)
    tile = jnp.zeros((e.shape[0], st.neg_block), jnp.float32)

    # Exponentials against each row's own target logit, summed as [Bt, Jc] tiles: no running
    # max and no cross-lane reduction per chunk (this kernel is bounded by instruction issue;
    # docs/perf_sampled.md). The sum overflows only where a kept logit exceeds the target's by
    # about 88; the tile is then redone with a running max below.
    def shifted(k, carry):
        l, cnt = carry
        s, keep, _, _ = _block_logits(st, key, e, t, c_ref, tabs, k)
        return (l + jnp.where(keep, _exp_tile(st, s, s_pos[:, None]), 0.0),
                cnt + jnp.where(keep, 1.0, 0.0))

    l, cnt = jax.lax.fori_loop(0, _n_chunks(st), shifted, (tile, tile))
    l, cnt = jnp.sum(l, axis=1), jnp.sum(cnt, axis=1)
    lse, shift = _finish_lse(st, s_pos, s_pos, l, cnt)
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
        m, l_max = jax.lax.fori_loop(0, _n_chunks(st), body, (z + _NEG_INIT, z))
        lse, shift = _finish_lse(st, s_pos, m, l_max, cnt)
        lse_ref[...] = lse
        shift_ref[...] = shift


def _block_bwd_kernel(st, key_ref, e_ref, t_ref, g_ref, lse_ref, shift_ref, c_ref, *refs):
    tabs, (dc_in_ref, de_ref, dc_ref) = _split_tabs(st, refs)
    del dc_in_ref
    key, t, g, e = key_ref[...], t_ref[...], g_ref[...], e_ref[...]
    lse, shift = lse_ref[...], shift_ref[...]
    ef = e.astype(jnp.float32)
    c_pos = c_ref[t, :].astype(jnp.float32)
    g_pos = (jnp.exp(jnp.sum(ef * c_pos, axis=1) - lse) - 1.0) * g
    if not target_term_outside(st):
        _scatter_rows(st, dc_ref, t, g_pos[:, None] * ef)
    prec = jax.lax.Precision.HIGHEST if e.dtype == jnp.float32 else None

    def body(k, de):
        s, keep, ids, cg = _block_logits(st, key, e, t, c_ref, tabs, k)
        gs = (jnp.where(keep, _exp_tile(st, s, shift[:, None]), 0.0) * g[:, None]).astype(e.dtype)
        dc_chunk = _dot(gs, e, trans_a=True, precision=prec).astype(jnp.float32)  # [Jc, D]
        _scatter_rows(st, dc_ref, ids, dc_chunk)
        return de + _dot(gs, cg, precision=prec).astype(jnp.float32)

    de = jax.lax.fori_loop(0, _n_chunks(st), body, g_pos[:, None] * c_pos)
    de_ref[...] = de.astype(de_ref.dtype)


# ------------------------------------------------------------------ wrappers


def _tables(st, table):
    return () if st.sampler == "uniform" else (table.prob, table.alias, table.log_q)


def _keys(st, seed_u32, n_pad_rows):
    bt = _tile(st)
    if _perm(st):
        return jnp.full((n_pad_rows,), sampling.perm_key(seed_u32), jnp.uint32)
    if st.sharing == "row":
        streams = jnp.arange(n_pad_rows, dtype=jnp.uint32)
    elif st.sharing == "block":
        streams = jnp.arange(n_pad_rows // bt, dtype=jnp.uint32)
    else:
        streams = jnp.zeros((1,), jnp.uint32)
    return sampling.stream_keys(seed_u32, streams, st.sharing)


def _key_spec(st):
    bt = _tile(st)
    if st.sharing == "row":
        return pl.BlockSpec((bt,), lambda i: (i,))
    if st.sharing == "block":
        return pl.BlockSpec((1,), lambda i: (i,))
    return pl.BlockSpec((1,), lambda i: (0,))


def _pad(x, n_pad):
    return jnp.pad(x, [(0, n_pad)] + [(0, 0)] * (x.ndim - 1)) if n_pad else x


def forward(st: Static, e, c, t, seed_u32, table):
    """Returns ``(lse f32[N], s_pos f32[N], shift f32[N])``."""
    n_rows, d = e.shape
    bt = _tile(st)
    n_pad = -n_rows % bt
    np_rows = n_rows + n_pad
    tabs = _tables(st, table)
    row = lambda: pl.BlockSpec((bt,), lambda i: (i,))
    kernel = _row_fwd_kernel if st.sharing == "row" else _block_fwd_kernel
    out = jax.ShapeDtypeStruct((np_rows,), jnp.float32)
    lse, shift, s_pos = pl.pallas_call(
        functools.partial(kernel, st),
        out_shape=(out, out, out),
        grid=(np_rows // bt,),
        in_specs=[_key_spec(st), pl.BlockSpec((bt, d), lambda i: (i, 0)), row(), _full_spec()]
        + [_full_spec() for _ in tabs],
        out_specs=(row(), row(), row()),
        compiler_params=_compiler_params(st, d),
        interpret=st.interpret,
        name=f"cce_neg_fwd_{st.sharing}",
    )(_keys(st, seed_u32, np_rows), _pad(e, n_pad), _pad(t, n_pad), c, *tabs)
    return lse[:n_rows], s_pos[:n_rows], shift[:n_rows]


def backward(st: Static, e, c, t, g_rows, seed_u32, table, lse, shift):
    """Gradients of ``sum_r g_rows[r] * loss_r``: ``(dE [N, D] in e.dtype, dC [V, D] dc_accum)``."""
    if _perm(st):
        return _backward_row_perm(st, e, c, t, g_rows, seed_u32, lse, shift)
    if st.sharing == "row" and 0 < st.dc_part_items < st.num_items:
        return _backward_row_partitioned(st, e, c, t, g_rows, seed_u32, table, lse, shift)
    n_rows, d = e.shape
    bt = _tile(st)
    n_pad = -n_rows % bt
    np_rows = n_rows + n_pad
    tabs = _tables(st, table)
    row = lambda: pl.BlockSpec((bt,), lambda i: (i,))
    kernel = _row_bwd_kernel if st.sharing == "row" else _block_bwd_kernel
    args = (_keys(st, seed_u32, np_rows), _pad(e, n_pad), _pad(t, n_pad), _pad(g_rows, n_pad),
            _pad(lse, n_pad), _pad(shift, n_pad), c, *tabs, jnp.zeros(c.shape, st.dc_accum))
    de, dc = pl.pallas_call(
        functools.partial(kernel, st),
        out_shape=(jax.ShapeDtypeStruct((np_rows, d), e.dtype),
                   jax.ShapeDtypeStruct(c.shape, st.dc_accum)),
        grid=(np_rows // bt,),
        in_specs=[_key_spec(st), pl.BlockSpec((bt, d), lambda i: (i, 0)), row(), row(), row(),
                  row(), _full_spec()] + [_full_spec() for _ in tabs] + [_full_spec()],
        out_specs=(pl.BlockSpec((bt, d), lambda i: (i, 0)), _full_spec()),
        input_output_aliases={len(args) - 1: 1},
        compiler_params=_compiler_params(st, d),
        interpret=st.interpret,
        name=f"cce_neg_bwd_{st.sharing}",
    )(*args)
    return de[:n_rows], add_target_term(st, dc, e, c, t, g_rows, lse)


def _backward_row_partitioned(st, e, c, t, g_rows, seed_u32, table, lse, shift):
    """Row sharing: dE kernel (gathers only) + item-partitioned dC scatter kernel."""
    n_rows, d = e.shape
    tabs = _tables(st, table)
    # Both kernels use tiles that divide the padded row count.
    bt, bs = st.row_block, st.scatter_rows
    n_pad = -n_rows % max(bt, bs)
    np_rows = n_rows + n_pad
    keys = _keys(st, seed_u32, np_rows)
    e_p, t_p, g_p = _pad(e, n_pad), _pad(t, n_pad), _pad(g_rows, n_pad)
    lse_p, shift_p = _pad(lse, n_pad), _pad(shift, n_pad)
    row = lambda b: pl.BlockSpec((b,), lambda i: (i,))
    args = (keys, e_p, t_p, g_p, lse_p, shift_p, c, *tabs, jnp.zeros(c.shape, st.dc_accum))
    de, dc = pl.pallas_call(
        functools.partial(_row_de_kernel, st),
        out_shape=(jax.ShapeDtypeStruct((np_rows, d), e.dtype),
                   jax.ShapeDtypeStruct(c.shape, st.dc_accum)),
        grid=(np_rows // bt,),
        in_specs=[row(bt), pl.BlockSpec((bt, d), lambda i: (i, 0))] + [row(bt)] * 4
        + [_full_spec()] * (2 + len(tabs)),
        out_specs=(pl.BlockSpec((bt, d), lambda i: (i, 0)), _full_spec()),
        input_output_aliases={len(args) - 1: 1},
        compiler_params=_compiler_params(st, d),
        interpret=st.interpret,
        name="cce_neg_bwd_row_de",
    )(*args)
    n_tiles = np_rows // bs
    n_parts = -(-st.num_items // st.dc_part_items)
    tile = lambda i: i % n_tiles
    args = (keys, e_p, t_p, g_p, shift_p, c, *tabs, dc)
    dc = pl.pallas_call(
        functools.partial(_row_dc_part_kernel, st, n_tiles),
        out_shape=jax.ShapeDtypeStruct(c.shape, st.dc_accum),
        grid=(n_parts * n_tiles,),
        in_specs=[pl.BlockSpec((bs,), lambda i: (tile(i),)),
                  pl.BlockSpec((bs, d), lambda i: (tile(i), 0))]
        + [pl.BlockSpec((bs,), lambda i: (tile(i),)) for _ in range(3)]
        + [_full_spec()] * (2 + len(tabs)),
        out_specs=_full_spec(),
        input_output_aliases={len(args) - 1: 0},
        compiler_params=_compiler_params(st, d),
        interpret=st.interpret,
        name="cce_neg_bwd_row_dc",
    )(*args)
    return de[:n_rows], add_target_term(st, dc, e, c, t, g_rows, lse)


def _backward_row_perm(st, e, c, t, g_rows, seed_u32, lse, shift):
    """Permutation sampler: dE kernel + per-item dC gather kernel + the sorted positive term.
    Returns dC in c.dtype (each row's negative sum and its target term rounded once each)."""
    from pallas_kernels.cce.ops import _target_term_into_dc

    n_rows, d = e.shape
    v = st.num_items
    bt = st.row_block
    n_pad = -n_rows % bt
    np_rows = n_rows + n_pad
    keys = _keys(st, seed_u32, np_rows)
    e_p, t_p, g_p = _pad(e, n_pad), _pad(t, n_pad), _pad(g_rows, n_pad)
    row = pl.BlockSpec((bt,), lambda i: (i,))
    de, g_pos = pl.pallas_call(
        functools.partial(_perm_de_kernel, st),
        out_shape=(jax.ShapeDtypeStruct((np_rows, d), e.dtype),
                   jax.ShapeDtypeStruct((np_rows,), jnp.float32)),
        grid=(np_rows // bt,),
        in_specs=[row, pl.BlockSpec((bt, d), lambda i: (i, 0))] + [row] * 4 + [_full_spec()],
        out_specs=(pl.BlockSpec((bt, d), lambda i: (i, 0)), row),
        compiler_params=_compiler_params(st, d),
        interpret=st.interpret,
        name="cce_neg_bwd_perm_de",
    )(keys, e_p, t_p, g_p, _pad(lse, n_pad), _pad(shift, n_pad), c)
    bv = st.dc_block
    n_tiles = -(-v // bv)
    dc = pl.pallas_call(
        functools.partial(_perm_dc_kernel, st, n_rows, -(-n_rows // sampling.perm_domain(v))),
        out_shape=jax.ShapeDtypeStruct((n_tiles * bv if st.interpret else v, d), c.dtype),
        grid=(n_tiles,),
        in_specs=[pl.BlockSpec((1,), lambda i: (0,))] + [_full_spec()] * 5,
        out_specs=_full_spec(),
        compiler_params=_compiler_params(st, d),
        interpret=st.interpret,
        name="cce_neg_bwd_perm_dc",
    )(keys[:1], e, t, g_rows, shift, c)
    # Positive term dC[t_r] += g_pos_r e_r (masked rows have g_pos = 0).
    dc = _target_term_into_dc(dc[:v], e, t, -g_pos[:n_rows])
    return de[:n_rows], dc
