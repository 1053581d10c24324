"""Pure-JAX CCE- forward/backward (``impl="xla"``) that regenerates the negatives from the hash
per row chunk.

Rows are processed in chunks with ``lax.scan``; a chunk holds at most ``[Bt, n, D]`` gathered
classifier rows (``sharing="row"``) or ``[n, D]`` (``"block"``, where the logits are a
``[Bt, n]`` matmul). ``dC`` is a float32 ``[V, D]`` scan carry updated by scatter-add.
``kept_counts`` gives the kernels' per-row count of kept negatives (for a backward that is
handed only the log-sum-exp).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from pallas_kernels.cce_neg import sampling
from pallas_kernels.cce_neg.config import XLA_BLOCK_ROWS, Static


def _chunk_rows(st: Static) -> int:
    return st.block_rows if st.sharing == "block" else XLA_BLOCK_ROWS


def _chunk_ids(st: Static, seed_u32, table, chunk, bt):
    """ids for one chunk: int32[bt, n] (row sharing) or int32[n] (shared)."""
    if st.sharing == "row":
        streams = chunk.astype(jnp.uint32) * jnp.uint32(bt) + jnp.arange(bt, dtype=jnp.uint32)
    else:
        streams = chunk.astype(jnp.uint32)[None]
    ids = sampling.ids_for_streams(seed_u32, streams, st.num_negatives, st.num_items, st.sampler,
                                   st.sharing, table)
    return ids if st.sharing == "row" else ids[0]


def _logits(st: Static, e, c, t, ids, table):
    """(s_pos f32[bt], s_neg f32[bt, n] corrected, -inf where excluded, gathered rows)."""
    c_pos = c[t]
    s_pos = jnp.einsum("rd,rd->r", e, c_pos, preferred_element_type=jnp.float32)
    cg = c[ids]
    if st.sharing == "row":
        s = jnp.einsum("rd,rkd->rk", e, cg, preferred_element_type=jnp.float32)
        ids_b = ids
    else:
        s = jnp.einsum("rd,kd->rk", e, cg, preferred_element_type=jnp.float32)
        ids_b = ids[None, :]
    keep = ids_b != t[:, None]
    if st.sampler == "uniform":
        n_eff = jnp.maximum(keep.sum(axis=1, keepdims=True), 1).astype(jnp.float32)
        corr = jnp.float32(math.log(st.num_items - 1)) - jnp.log(n_eff)
    else:
        corr = -(jnp.float32(math.log(st.num_negatives)) + table.log_q[ids_b])
    s_neg = jnp.where(keep, s + corr, -jnp.inf)
    return s_pos, s_neg, c_pos, cg


def _pad_rows(x, n_pad):
    return jnp.pad(x, [(0, n_pad)] + [(0, 0)] * (x.ndim - 1)) if n_pad else x


def _chunked(st, e, t, extra):
    bt = _chunk_rows(st)
    n_rows = e.shape[0]
    n_pad = -n_rows % bt
    nc = (n_rows + n_pad) // bt
    xs = [_pad_rows(a, n_pad).reshape((nc, bt) + a.shape[1:]) for a in (e, t, *extra)]
    return bt, nc, xs


def forward(st: Static, e, c, t, seed_u32, table):
    """Returns ``(lse f32[N], s_pos f32[N], None)``."""
    n_rows = e.shape[0]
    bt, nc, (e3, t3) = _chunked(st, e, t, ())

    def body(_, x):
        ci, ec, tc = x
        ids = _chunk_ids(st, seed_u32, table, ci, bt)
        s_pos, s_neg, _, _ = _logits(st, ec, c, tc, ids, table)
        lse = jnp.logaddexp(s_pos, jax.nn.logsumexp(s_neg, axis=1))
        return None, (lse, s_pos)

    _, (lse, s_pos) = jax.lax.scan(body, None, (jnp.arange(nc, dtype=jnp.uint32), e3, t3))
    return lse.reshape(-1)[:n_rows], s_pos.reshape(-1)[:n_rows], None


def backward(st: Static, e, c, t, g_rows, seed_u32, table, lse, aux=None):
    """Gradients of ``sum_r g_rows[r] * loss_r``: ``(dE f32[N, D], dC f32[V, D])``."""
    n_rows, d = e.shape
    bt, nc, (e3, t3, g3, l3) = _chunked(st, e, t, (g_rows, lse))

    def body(dc, x):
        ci, ec, tc, gc, lc = x
        ids = _chunk_ids(st, seed_u32, table, ci, bt)
        s_pos, s_neg, c_pos, cg = _logits(st, ec, c, tc, ids, table)
        g_pos = (jnp.exp(s_pos - lc) - 1.0) * gc
        g_neg = jnp.exp(s_neg - lc[:, None]) * gc[:, None]
        ef = ec.astype(jnp.float32)
        cgf = cg.astype(jnp.float32)
        de = g_pos[:, None] * c_pos.astype(jnp.float32)
        dc = dc.at[tc].add(g_pos[:, None] * ef)
        if st.sharing == "row":
            de = de + jnp.einsum("rk,rkd->rd", g_neg, cgf)
            dc = dc.at[ids.reshape(-1)].add((g_neg[:, :, None] * ef[:, None, :]).reshape(-1, d))
        else:
            de = de + g_neg @ cgf
            dc = dc.at[ids].add(g_neg.T @ ef)
        return dc, de

    dc0 = jnp.zeros(c.shape, jnp.float32)
    dc, de = jax.lax.scan(body, dc0, (jnp.arange(nc, dtype=jnp.uint32), e3, t3, g3, l3))
    return de.reshape(-1, d)[:n_rows], dc


def kept_counts(st: Static, t, seed_u32, table):
    """float32[N]: how many of each row's ``n`` negatives differ from its target (what the
    uniform logQ correction ``log(V - 1) - log(max(count, 1))`` needs); hashes only."""
    n_rows = t.shape[0]
    bt = _chunk_rows(st)
    n_pad = -n_rows % bt
    nc = (n_rows + n_pad) // bt
    t3 = _pad_rows(t, n_pad).reshape(nc, bt)

    def body(_, x):
        ci, tc = x
        ids = _chunk_ids(st, seed_u32, table, ci, bt)
        ids_b = ids if st.sharing == "row" else ids[None, :]
        return None, jnp.sum(ids_b != tc[:, None], axis=1).astype(jnp.float32)

    _, cnt = jax.lax.scan(body, None, (jnp.arange(nc, dtype=jnp.uint32), t3))
    return cnt.reshape(-1)[:n_rows]
