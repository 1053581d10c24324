"""``pallas_row_losses``: the Pallas forward and backward kernels behind one ``jax.custom_vjp``.

Inputs are padded here so the kernels see power-of-two tiles: rows to a whole number of row
tiles (O(N D)), and D to a power of two >= 16 only when it is not one already (then the
classifier is copied once; D in {64, 128, 256} never is). The catalog is never padded: the
kernels mask the ragged last catalog tile.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from pallas_kernels.cce import backward, common, forward, reference

_MIN_DOT = 16  # Triton's smallest dot tile


def resolve_config(n: int, v: int, d: int, block_n=None, block_v=None,
                   config: common.KernelConfig | None = None,
                   itemsize: int = 2) -> common.KernelConfig:
    """Defaults for (n, v, d, dtype size), user overrides, then tiles clamped to the problem."""
    cfg = common.fill_defaults(config, n, v, d, itemsize)
    if block_n is not None:
        cfg = dataclasses.replace(cfg, fwd_block_n=block_n, bwd_block_n=block_n)
    if block_v is not None:
        cfg = dataclasses.replace(cfg, fwd_block_v=block_v, bwd_block_v=block_v)
    for name in ("fwd_block_n", "fwd_block_v", "bwd_block_n", "bwd_block_v"):
        size = getattr(cfg, name)
        if size & (size - 1):
            raise ValueError(f"{name}={size} must be a power of two (Triton loads power-of-two tiles)")
    cap_n = max(_MIN_DOT, common.next_pow2(n))
    cap_v = max(_MIN_DOT, common.next_pow2(v))
    return dataclasses.replace(
        cfg,
        fwd_block_n=max(_MIN_DOT, min(cfg.fwd_block_n, cap_n)),
        bwd_block_n=max(_MIN_DOT, min(cfg.bwd_block_n, cap_n)),
        fwd_block_v=max(_MIN_DOT, min(cfg.fwd_block_v, cap_v)),
        bwd_block_v=max(_MIN_DOT, min(cfg.bwd_block_v, cap_v)),
    )


def _padded(embeddings, classifier, cfg):
    n, d = embeddings.shape
    d_pad = max(_MIN_DOT, common.next_pow2(d))
    row_tile = max(cfg.fwd_block_n, cfg.bwd_block_n)
    n_pad = -(-n // row_tile) * row_tile
    e_pad = jnp.pad(embeddings, ((0, n_pad - n), (0, d_pad - d)))
    c_pad = classifier if d_pad == d else jnp.pad(classifier, ((0, 0), (0, d_pad - d)))
    return e_pad, c_pad


def _pad_vec(x, n_pad, value):
    return jnp.pad(x, (0, n_pad - x.shape[0]), constant_values=value)


def _lse(embeddings, classifier, cfg, interpret):
    e_pad, c_pad = _padded(embeddings, classifier, cfg)
    lse = forward.lse_rows(e_pad, c_pad, classifier.shape[0], cfg, interpret=interpret)
    return lse[: embeddings.shape[0]]


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _row_losses(embeddings, classifier, targets, valid, cfg, interpret):
    return _fwd(embeddings, classifier, targets, valid, cfg, interpret)[0]


def _fwd(embeddings, classifier, targets, valid, cfg, interpret):
    lse = _lse(embeddings, classifier, cfg, interpret)
    z_t = reference.target_logits(embeddings, classifier, targets, valid)
    loss = jnp.where(valid, lse - z_t, 0.0)
    return loss, (embeddings, classifier, targets, valid, lse)


def _bwd(cfg, interpret, res, g_n):
    embeddings, classifier, targets, valid, lse = res
    n, d = embeddings.shape
    e_pad, c_pad = _padded(embeddings, classifier, cfg)
    n_pad = e_pad.shape[0]
    g = _pad_vec(jnp.where(valid, g_n.astype(jnp.float32), 0.0), n_pad, 0.0)
    t = _pad_vec(jnp.where(valid, targets, -1).astype(jnp.int32), n_pad, -1)
    lse2 = _pad_vec(lse * common.LOG2E, n_pad, 0.0)
    de, dc = backward.grads(e_pad, c_pad, classifier.shape[0], lse2, t, g, cfg,
                            interpret=interpret)
    return de[:n, :d], dc[:, :d], None, None


_row_losses.defvjp(_fwd, _bwd)


def pallas_row_losses(embeddings, classifier, targets, valid, *, interpret=False, block_n=None,
                      block_v=None, config: common.KernelConfig | None = None):
    """float32[N] per-row CCE losses (0 on rows with valid == False) by the Pallas kernels."""
    n, d = embeddings.shape
    d_pad = max(_MIN_DOT, common.next_pow2(d))
    for name, rows in (("classifier", classifier.shape[0]), ("embeddings", n)):
        # Element offsets inside the kernels are 32-bit (cf. apple/ml-cross-entropy#37).
        if rows * d_pad >= 2**31:
            raise ValueError(f"{name} has {rows} x {d_pad} >= 2^31 elements, past the kernels' "
                             f"32-bit offsets; shard it (pallas_kernels.vocab_parallel) or use "
                             f"impl='xla'")
    cfg = resolve_config(n, classifier.shape[0], d, block_n, block_v, config,
                         embeddings.dtype.itemsize)
    return _row_losses(embeddings, classifier, targets, valid, cfg, interpret)
