"""Plain-JAX cross-entropy over a linear classifier: a naive reference and an exact chunked version.

Both compute, per row r, ``loss[r] = logsumexp_v(e_r . c_v) - e_r . c_{t_r}`` (float32) and 0 for
rows with ``valid[r] == False``. Shapes: ``embeddings [N, D]``, ``classifier [V, D]`` (same dtype),
``targets int32[N]`` (any value on invalid rows), ``valid bool[N]``.

* ``naive_row_losses`` materialises the ``N x V`` float32 logits (tests, small shapes only).
* ``chunked_row_losses`` streams the catalog in blocks of ``block_v`` columns with an online
  logsumexp and recomputes the blocks in a ``jax.custom_vjp`` backward; extra memory is
  O(N * D + V * D + block_n * block_v). It is ``impl="xla"``, the CPU fallback of the kernels.
  Its two halves are public too: ``chunked_lse`` (the log-sum-exp) and ``chunked_grads`` (the
  gradients given one; a valid row whose target is outside [0, V) gets no target term).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

_NEG_INF = float("-inf")


def matmul_precision(dtype) -> lax.Precision:
    # float32 inputs get true float32 products (no TF32 on GPU): the tests compare to float64.
    return lax.Precision.HIGHEST if dtype == jnp.float32 else lax.Precision.DEFAULT


def _logits(e_nd: jax.Array, c_vd: jax.Array) -> jax.Array:
    """float32 logits [n, v] of e [n, D] against c [v, D] with float32 accumulation."""
    return lax.dot_general(
        e_nd, c_vd, (((1,), (1,)), ((), ())),
        precision=matmul_precision(e_nd.dtype), preferred_element_type=jnp.float32)


def target_logits(embeddings, classifier, targets, valid) -> jax.Array:
    """float32[N] ``e_r . c_{t_r}``; invalid rows read row 0 of the classifier and give 0."""
    safe_t = jnp.where(valid, targets, 0).astype(jnp.int32)
    c_t = jnp.take(classifier, safe_t, axis=0)  # [N, D], O(N * D)
    z_t = jnp.sum(embeddings.astype(jnp.float32) * c_t.astype(jnp.float32), axis=-1)
    return jnp.where(valid, z_t, 0.0)


def naive_row_losses(embeddings, classifier, targets, valid) -> jax.Array:
    """float32[N] losses from the full ``N x V`` logits (differentiable by plain autodiff)."""
    logits = _logits(embeddings, classifier)
    lse = jax.nn.logsumexp(logits, axis=-1)
    z_t = target_logits(embeddings, classifier, targets, valid)
    return jnp.where(valid, lse - z_t, 0.0)


# --------------------------------------------------------------------------------------------
# Chunked exact implementation.


def _vocab_blocks(v: int, block_v: int) -> tuple[int, int]:
    """(block width, number of blocks). The last block is shifted left to stay inside [0, V);
    columns it shares with the previous block are masked, so no copy of the classifier is padded."""
    bv = min(block_v, v)
    return bv, -(-v // bv)


def _block_start_and_mask(b, v: int, bv: int):
    """First column read by vocab block ``b`` and bool[bv] of the columns it owns."""
    nominal = b * bv
    start = jnp.minimum(nominal, v - bv)
    cols = start + jnp.arange(bv)
    return start, cols >= nominal


def _pad_rows(x, n_pad: int, value=0):
    if n_pad == 0:
        return x
    widths = [(0, n_pad)] + [(0, 0)] * (x.ndim - 1)
    return jnp.pad(x, widths, constant_values=value)


def _row_blocks(n: int, block_n: int | None) -> tuple[int, int]:
    bn = n if block_n is None else max(1, min(block_n, n))
    return bn, -(-n // bn)


def _lse_rows(e_nd, c_vd, block_v: int) -> jax.Array:
    """float32[n] logsumexp over all V columns, streaming blocks of ``block_v`` columns."""
    n = e_nd.shape[0]
    v = c_vd.shape[0]
    bv, nb = _vocab_blocks(v, block_v)

    def body(b, carry):
        m, s = carry
        start, owned = _block_start_and_mask(b, v, bv)
        c_blk = lax.dynamic_slice_in_dim(c_vd, start, bv, axis=0)
        x = jnp.where(owned[None, :], _logits(e_nd, c_blk), _NEG_INF)
        m_new = jnp.maximum(m, jnp.max(x, axis=-1))
        # m_new is finite after the first block (every block owns >= 1 column).
        s = s * jnp.exp(m - m_new) + jnp.sum(jnp.exp(x - m_new[:, None]), axis=-1)
        return m_new, s

    init = (jnp.full((n,), _NEG_INF, jnp.float32), jnp.zeros((n,), jnp.float32))
    m, s = lax.fori_loop(0, nb, body, init)
    return m + jnp.log(s)


def chunked_lse(embeddings, classifier, block_n, block_v) -> jax.Array:
    """float32[N] log-sum-exp of every row over the whole catalog, in row x catalog blocks."""
    n, d = embeddings.shape
    bn, nb = _row_blocks(n, block_n)
    e_blocks = _pad_rows(embeddings, bn * nb - n).reshape(nb, bn, d)
    lse = lax.map(lambda e: _lse_rows(e, classifier, block_v), e_blocks)
    return lse.reshape(-1)[:n]


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def chunked_row_losses(embeddings, classifier, targets, valid, block_n=None, block_v=4096):
    """float32[N] exact losses without materialising the logits (see module docstring).

    ``block_n`` rows (None: all rows) x ``block_v`` columns is the largest float32 temporary.
    """
    lse = chunked_lse(embeddings, classifier, block_n, block_v)
    z_t = target_logits(embeddings, classifier, targets, valid)
    return jnp.where(valid, lse - z_t, 0.0)


def _chunked_fwd(embeddings, classifier, targets, valid, block_n, block_v):
    lse = chunked_lse(embeddings, classifier, block_n, block_v)
    z_t = target_logits(embeddings, classifier, targets, valid)
    loss = jnp.where(valid, lse - z_t, 0.0)
    return loss, (embeddings, classifier, targets, valid, lse)


def _chunked_bwd(block_n, block_v, res, g_n):
    embeddings, classifier, targets, valid, lse = res
    de, dc = chunked_grads(embeddings, classifier, targets, valid, lse, g_n, block_n, block_v)
    return de, dc, None, None


def chunked_grads(embeddings, classifier, targets, valid, lse, g_n, block_n=None, block_v=4096):
    """(dE, dC) of sum_r g_r loss_r given the rows' log-sum-exp ``lse``, in row x catalog blocks.
    A valid row whose target is outside [0, V) gets no target term."""
    n, d = embeddings.shape
    v = classifier.shape[0]
    bv, nvb = _vocab_blocks(v, block_v)
    bn, nnb = _row_blocks(n, block_n)
    n_pad = bn * nnb - n
    # Invalid rows get g = 0, so every gradient they would produce is exactly zero.
    g = jnp.where(valid, g_n.astype(jnp.float32), 0.0)
    safe_t = jnp.where(valid, targets, -1).astype(jnp.int32)  # -1 never matches a column
    e_blocks = _pad_rows(embeddings, n_pad).reshape(nnb, bn, d)
    t_blocks = _pad_rows(safe_t, n_pad, -1).reshape(nnb, bn)
    g_blocks = _pad_rows(g, n_pad).reshape(nnb, bn)
    lse_blocks = _pad_rows(lse, n_pad).reshape(nnb, bn)
    op_dtype = embeddings.dtype  # G is a GEMM operand in the input dtype, accumulation is f32
    prec = matmul_precision(op_dtype)

    def row_block(dc_vd, xs):
        e_b, t_b, g_b, lse_b = xs

        def vocab_block(b, carry):
            de_bd, dc = carry
            start, owned = _block_start_and_mask(b, v, bv)
            c_blk = lax.dynamic_slice_in_dim(classifier, start, bv, axis=0)
            x = _logits(e_b, c_blk)
            p = jnp.exp(x - lse_b[:, None])
            onehot = (start + jnp.arange(bv))[None, :] == t_b[:, None]
            grad = jnp.where(owned[None, :], (p - onehot) * g_b[:, None], 0.0).astype(op_dtype)

            de_blk = jnp.dot(grad, c_blk, precision=prec, preferred_element_type=jnp.float32)
            dc_blk = lax.dot_general(grad, e_b, (((0,), (0,)), ((), ())), precision=prec,
                                     preferred_element_type=jnp.float32)
            de_bd = de_bd + de_blk
            dc = lax.dynamic_update_slice_in_dim(
                dc, lax.dynamic_slice_in_dim(dc, start, bv, axis=0) + dc_blk, start, axis=0)
            return de_bd, dc

        de_bd, dc_vd = lax.fori_loop(
            0, nvb, vocab_block, (jnp.zeros((bn, d), jnp.float32), dc_vd))
        return dc_vd, de_bd

    dc, de_blocks = lax.scan(row_block, jnp.zeros((v, d), jnp.float32),
                             (e_blocks, t_blocks, g_blocks, lse_blocks))
    de = de_blocks.reshape(-1, d)[:n]
    return de.astype(embeddings.dtype), dc.astype(classifier.dtype)


chunked_row_losses.defvjp(_chunked_fwd, _chunked_bwd)
