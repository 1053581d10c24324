"""Row sharing: the loss and both gradients in one pass over the negatives.

The two-pass scheme (``kernels.forward`` then ``kernels.backward``) gathers every sampled
classifier row twice: once for the log-sum-exp and once more to form ``softmax - onehot``. When
the loss is reduced to a scalar (``reduction="mean"/"sum"``) the gradients are linear in its one
cotangent, so they can be formed at forward time for a cotangent of 1 and scaled afterwards
(``api.py`` runs it wherever it applies: Pallas, row sharing, a scalar reduction). This kernel
does that with one gather per (row, slot):

* pass 1, over the slots: gather the ``[R, D]`` sampled rows of C, take the logits, keep the
  online max / sum-of-exp and, as flash attention does for its output, an online
  ``sum_j exp(s_j - m) c_j``, which at the end is ``dE`` up to the row's scale; write the
  logits ``s [R]`` to a scratch row of the program;
* pass 2, over the slots again: with the final log-sum-exp, ``p = exp(s - shift)`` from the
  scratch (no gather: ``dC`` needs only ``p`` and the row's own embedding), regenerate the ids
  from the hash and add ``p e_r`` into ``dC`` with atomics.

HBM traffic per (row, slot): one gathered C row plus the dC read-modify-write, against two
gathers plus the read-modify-write for the two-pass scheme (docs/decisions/006).

The grid is persistent: ``P`` programs each loop over row tiles ``pid, pid + P, ...`` and reuse
one ``[n, R]`` float32 scratch, so the scratch is ``P n R`` floats whatever N is (no ``[N, n]``
array). A first form held the logits in registers and gathered / scattered ``[R, k, D]`` blocks
of k slots; it measured 2x slower than the two-pass kernels (the 3-D atomics and the register
array's selects).

Measured on an H100 (N = 131072, n = 511, V = 10^6, bf16; docs/decisions/006): with relaxed
atomics (``pallas_kernels.atomics``) the backward is bound by HBM traffic and the saved gather
shows: f+b 41.4 -> 37.7 ms (D = 128), 83.6 -> 75.6 (D = 256) against the two passes, with 4096
programs.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plt

from pallas_kernels.cce_neg import sampling
from pallas_kernels.cce_neg.config import Static
from pallas_kernels.cce_neg.kernels import (
    NEG_INIT, compiler_params, draw, finish_lse, full_spec, keys_for, masked_rows, pad,
    row_logits, scatter_rows, slot_key, split_tabs, tables)

# Programs of the persistent grid; the scratch is programs * n * row_block float32 (64 MiB at
# n = 511 and 8 rows). H100, N = 131072 (docs/decisions/006): 4096 beat 2048 by 4-8% at
# D <= 128 (one tile per program, 16384 at D = 128, was 1-6% faster again for 4x the scratch).
DEFAULT_PROGRAMS = 4096


def _row_vg_kernel(st: Static, n_tiles: int, n_programs: int, keys_ref, e_ref, t_ref, g_ref,
                   c_ref, *refs):
    tabs, (dc_in_ref, loss_ref, de_ref, dc_ref, s_ref) = split_tabs(st.sampler, refs)
    del dc_in_ref  # aliased with dc_ref
    bt = st.row_block
    pid = pl.program_id(0)  # at the top level: the interpreter has no program_id inside loops

    def tile_body(it, carry):
        rows = pl.ds(pl.multiple_of((pid + it * n_programs) * bt, bt), bt)
        keys, t, g = keys_ref[rows], t_ref[rows], g_ref[rows]
        valid = g != 0.0  # rows of weight 0 (masked) neither gather nor scatter
        ef = e_ref[rows, :].astype(jnp.float32)
        c_pos = masked_rows(c_ref, t, valid, st.interpret).astype(jnp.float32)
        s_pos = jnp.sum(ef * c_pos, axis=1)

        def pass1(j, carry):
            m, l, cnt, acc = carry
            s, keep, _, cg = row_logits(st, keys, ef, t, c_ref, tabs, j, valid)
            s = jnp.where(keep, s, -jnp.inf)
            s_ref[pid, j, :] = s
            m_new = jnp.maximum(m, s)
            alpha, p = jnp.exp(m - m_new), jnp.exp(s - m_new)
            acc = acc * alpha[:, None] + p[:, None] * cg
            return m_new, l * alpha + p, cnt + keep.astype(jnp.float32), acc

        z = jnp.zeros_like(s_pos)
        m, l, cnt, acc = jax.lax.fori_loop(0, st.num_negatives, pass1,
                                           (z + NEG_INIT, z, z, jnp.zeros_like(ef)))
        lse, shift = finish_lse(st, s_pos, m, l, cnt)
        g_pos = (jnp.exp(s_pos - lse) - 1.0) * g
        # sum_j softmax_j c_j = acc exp(m - shift); exp(m - shift) <= 1 (shift >= m + log l, l >= 1)
        de_ref[rows, :] = (g_pos[:, None] * c_pos
                           + (g * jnp.exp(m - shift))[:, None] * acc).astype(de_ref.dtype)
        loss_ref[rows] = lse - s_pos
        scatter_rows(dc_ref, t, g_pos[:, None] * ef, mask=valid, interpret=st.interpret)
        if not st.interpret:
            plt.debug_barrier()  # the scratch written by pass 1 is read by other threads

        def pass2(j, s):
            # The next slot's logits are loaded one iteration ahead (an L2 round trip each).
            s_next = s_ref[pid, jnp.minimum(j + 1, st.num_negatives - 1), :]
            ids = draw(st, sampling.draw_hash(keys, slot_key(j)), tabs[0], tabs[1])
            p = jnp.exp(s - shift) * g  # 0 where not kept (s = -inf) and on masked rows
            scatter_rows(dc_ref, ids, p[:, None] * ef, mask=p != 0.0, interpret=st.interpret)
            return s_next

        jax.lax.fori_loop(0, st.num_negatives, pass2, s_ref[pid, 0, :])
        if not st.interpret:
            plt.debug_barrier()  # the next tile overwrites the scratch
        return carry

    my_tiles = (n_tiles - pid + n_programs - 1) // n_programs
    jax.lax.fori_loop(0, my_tiles, tile_body, 0)


def value_and_grad(st: Static, e, c, t, weights, seed_u32, table):
    """Row sharing, one pass: ``(loss f32[N] unweighted, dE [N, D] e.dtype, dC [V, D] float32)``,
    the gradients being those of ``sum_r weights[r] * loss_r`` (rows of weight 0 neither gather
    nor scatter: their gradients are 0 and their loss entry is meaningless)."""
    n_rows, d = e.shape
    bt = st.row_block
    n_pad = -n_rows % bt
    np_rows = n_rows + n_pad
    n_tiles = np_rows // bt
    n_programs = min(n_tiles, DEFAULT_PROGRAMS)
    tabs = tables(st, table)
    args = (keys_for(st, seed_u32, np_rows), pad(e, n_pad), pad(t, n_pad), pad(weights, n_pad), c,
            *tabs, jnp.zeros(c.shape, jnp.float32))
    loss, de, dc, _ = pl.pallas_call(
        functools.partial(_row_vg_kernel, st, n_tiles, n_programs),
        out_shape=(jax.ShapeDtypeStruct((np_rows,), jnp.float32),
                   jax.ShapeDtypeStruct((np_rows, d), e.dtype),
                   jax.ShapeDtypeStruct(c.shape, jnp.float32),
                   jax.ShapeDtypeStruct((n_programs, st.num_negatives, bt), jnp.float32)),
        grid=(n_programs,),
        in_specs=[full_spec() for _ in args],
        out_specs=tuple(full_spec() for _ in range(4)),
        input_output_aliases={len(args) - 1: 2},
        compiler_params=compiler_params(st.num_warps, st.num_stages, d),
        interpret=st.interpret,
        name="cce_neg_value_and_grad_row",
    )(*args)
    loss = loss[:n_rows]
    return loss, de[:n_rows], dc
