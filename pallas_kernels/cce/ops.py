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
from jax import lax

from pallas_kernels.cce import backward, common, forward, forward_mosaic, reference

_MIN_DOT = 16  # Triton's smallest dot tile


def resolve_config(n: int, v: int, d: int, block_n=None, block_v=None,
                   config: common.KernelConfig | None = None,
                   itemsize: int = 2) -> common.KernelConfig:
    """Defaults for (n, v, d, dtype size), user overrides, then tiles clamped to the problem."""
    cfg = common.fill_defaults(config, n, v, d, itemsize)
    if block_n is not None:
        cfg = dataclasses.replace(cfg, fwd_block_n=block_n, bwd_block_n=block_n,
                                  fde_block_n=block_n)
    if block_v is not None:
        cfg = dataclasses.replace(cfg, fwd_block_v=block_v, bwd_block_v=block_v,
                                  fde_block_v=block_v)
    if cfg.bwd_onehot not in ("kernel", "xla"):
        raise ValueError(f"bwd_onehot={cfg.bwd_onehot!r} must be 'kernel' or 'xla'")
    if cfg.fwd_shift not in ("online", "target"):
        raise ValueError(f"fwd_shift={cfg.fwd_shift!r} must be 'online' or 'target'")
    if cfg.fwd_impl not in ("triton", "mosaic"):
        raise ValueError(f"fwd_impl={cfg.fwd_impl!r} must be 'triton' or 'mosaic'")
    for name in ("fwd_block_n", "fwd_block_v", "bwd_block_n", "bwd_block_v", "fde_block_n",
                 "fde_block_v"):
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
        fde_block_n=max(_MIN_DOT, min(cfg.fde_block_n, cap_n)),
        fde_block_v=max(_MIN_DOT, min(cfg.fde_block_v, cap_v)),
    )


def _padded(embeddings, classifier, cfg):
    n, d = embeddings.shape
    d_pad = max(_MIN_DOT, common.next_pow2(d))
    row_tile = max(cfg.fwd_block_n, cfg.bwd_block_n, cfg.fde_block_n)
    n_pad = -(-n // row_tile) * row_tile
    e_pad = jnp.pad(embeddings, ((0, n_pad - n), (0, d_pad - d)))
    c_pad = classifier if d_pad == d else jnp.pad(classifier, ((0, 0), (0, d_pad - d)))
    return e_pad, c_pad


def _pad_vec(x, n_pad, value):
    return jnp.pad(x, (0, n_pad - x.shape[0]), constant_values=value)


def _lse_one(embeddings, classifier, cfg, interpret, shift=None, with_acc=False):
    """One catalog chunk's LSE [N] (``with_acc``: and its float32 acc [N, D], forward.py)."""
    n, d = embeddings.shape
    if shift is not None and not with_acc and _use_mosaic(cfg, embeddings, classifier.shape[0]):
        return _lse_mosaic(embeddings, classifier, shift, cfg, interpret)
    e_pad, c_pad = _padded(embeddings, classifier, cfg)
    if shift is not None:
        shift = _pad_vec(shift, e_pad.shape[0], 0.0)
    out = forward.lse_rows(e_pad, c_pad, classifier.shape[0], cfg, interpret=interpret,
                           shift=shift, with_acc=with_acc)
    return (out[0][:n], out[1][:n, :d]) if with_acc else out[:n]


def _use_mosaic(cfg, embeddings, classifier_rows: int) -> bool:
    return cfg.fwd_impl == "mosaic" and forward_mosaic.supported(
        classifier_rows, embeddings.shape[1], embeddings.dtype)


def _lse_mosaic(embeddings, classifier, shift, cfg, interpret):
    """The target-shifted LSE [N] by the Mosaic GPU kernel (rows padded to its CTA)."""
    n = embeddings.shape[0]
    cta_rows = cfg.mosaic_compute_wgs * cfg.mosaic_block_n
    n_pad = -(-n // cta_rows) * cta_rows
    e_pad = jnp.pad(embeddings, ((0, n_pad - n), (0, 0)))
    lse = forward_mosaic.lse_rows(
        e_pad, classifier, _pad_vec(shift, n_pad, 0.0),
        block_n=cfg.mosaic_block_n, block_v=cfg.mosaic_block_v, slots=cfg.mosaic_slots,
        lhs_regs=cfg.mosaic_lhs_regs, pingpong=cfg.mosaic_pingpong,
        compute_wgs=cfg.mosaic_compute_wgs, interpret=interpret)
    return lse[:n]


def _merge_lse(parts):
    """LSE over catalog chunks from their per-chunk LSEs (a [chunks, N] logsumexp)."""
    return parts[0] if len(parts) == 1 else jax.nn.logsumexp(jnp.stack(parts), axis=0)


def _as_chunks(chunks, v: int, d: int):
    """((lo, hi, cfg), ...) from a chunk tuple, or from one KernelConfig (callers such as
    ``pallas_kernels.vocab_parallel`` pass one config for their shard: it is chunked here too)."""
    if isinstance(chunks, common.KernelConfig):
        return tuple((lo, hi, chunks) for lo, hi in catalog_chunks(v, d))
    return chunks


def _lse(embeddings, classifier, chunks, interpret, shift=None):
    # One kernel launch per catalog chunk, merged in float32 (a [chunks, N] logsumexp).
    chunks = _as_chunks(chunks, *classifier.shape)
    return _merge_lse([_lse_one(embeddings, classifier[lo:hi], cfg, interpret, shift)
                       for lo, hi, cfg in chunks])


def _lse_by_target(embeddings, classifier, z_t, chunks, interpret):
    """LSE with each row's exponentials shifted by its target logit (``fwd_shift="target"``):
    z_t <= the row max, so no running max is needed; if any row overflows (a logit ~70 above its
    target's) the whole batch is redone with the running max, so the result stays exact."""
    lse = _lse(embeddings, classifier, chunks, interpret, shift=z_t)
    return lax.cond(jnp.all(jnp.isfinite(lse)), lambda: lse,
                    lambda: _lse(embeddings, classifier, _online(chunks), interpret))


def _online(chunks):
    return tuple((lo, hi, dataclasses.replace(cfg, fwd_shift="online")) for lo, hi, cfg in chunks)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _row_losses(embeddings, classifier, targets, valid, chunks, interpret):
    # Not differentiated: the plain forward (no dE accumulation even under ``fused_de``).
    return _fwd_plain(embeddings, classifier, targets, valid, chunks, interpret)[0]


def _fwd_plain(embeddings, classifier, targets, valid, chunks, interpret):
    z_t = reference.target_logits(embeddings, classifier, targets, valid)
    if all(cfg.fwd_shift == "target" for _, _, cfg in _as_chunks(chunks, *classifier.shape)):
        lse = _lse_by_target(embeddings, classifier, z_t, chunks, interpret)
    else:
        lse = _lse(embeddings, classifier, chunks, interpret)
    loss = jnp.where(valid, lse - z_t, 0.0)
    return loss, (embeddings, classifier, targets, valid, lse)


def _fused(chunks) -> bool:
    return all(cfg.fused_de and cfg.fwd_shift == "target" and cfg.bwd_mode == "two_pass"
               and cfg.bwd_onehot == "xla" for _, _, cfg in chunks)


def _fwd(embeddings, classifier, targets, valid, chunks, interpret):
    """Forward of a differentiated call: with ``fused_de`` also the softmax-weighted classifier
    rows a_r = sum_v softmax_rv c_v (float32 [N, D]) as a sixth residual."""
    if not _fused(_as_chunks(chunks, *classifier.shape)):
        return _fwd_plain(embeddings, classifier, targets, valid, chunks, interpret)
    z_t = reference.target_logits(embeddings, classifier, targets, valid)
    lse, a = _lse_and_mean_by_target(embeddings, classifier, z_t, chunks, interpret)
    loss = jnp.where(valid, lse - z_t, 0.0)
    return loss, (embeddings, classifier, targets, valid, lse, a)


def _lse_and_mean_by_target(embeddings, classifier, z_t, chunks, interpret):
    """(lse, a): ``_lse_by_target`` plus a_r = sum_v softmax_rv c_v (float32 [N, D]).

    Every catalog chunk and split is shifted by the same z_t, so their sums and accs add. If a
    row's sum (or acc) overflows, lse is redone with the running max and a by the dE kernel."""
    n, d = embeddings.shape
    lses, accs = zip(*(_lse_one(embeddings, classifier[lo:hi], cfg, interpret, z_t, with_acc=True)
                       for lo, hi, cfg in _as_chunks(chunks, *classifier.shape)))
    lse = _merge_lse(lses)
    a = sum(accs[1:], accs[0]) * jnp.exp(z_t - lse)[:, None]  # / (the row's sum rel. to z_t)

    def redo():
        lse_o = _lse(embeddings, classifier, _online(chunks), interpret)
        a_o = 0.0
        for lo, hi, cfg in _as_chunks(chunks, *classifier.shape):
            e_pad, c_pad = _padded(embeddings, classifier[lo:hi], cfg)
            lse2 = _pad_vec(lse_o * common.LOG2E, e_pad.shape[0], 0.0)
            a_o = a_o + backward.softmax_mean(e_pad, c_pad, hi - lo, lse2, cfg,
                                              interpret=interpret)[:n, :d]
        return lse_o, a_o

    ok = jnp.all(jnp.isfinite(lse)) & jnp.all(jnp.isfinite(a))
    return lax.cond(ok, lambda: (lse, a), redo)


def _bwd(chunks, interpret, res, g_n):
    return _grads(chunks, interpret, res, g_n)


def _target_term_into_dc(dc, e, t, w):
    """dc [V', D] with sum_{r: t_r = v} -w_r e_r added to row v: rows sorted by target, summed
    per target in float32 (O(N D)), then added to the row in float32 with one rounding (so a
    popular target's many terms are not summed in dc's dtype). t: int32 [N] (-1: none), w:
    float32 [N]."""
    n, v = t.shape[0], dc.shape[0]
    key = jnp.where(t >= 0, t, v)  # rows without a target sort last
    order = jnp.argsort(key)
    key = key[order]
    contrib = -(w[order, None] * e[order].astype(jnp.float32))
    seg = jnp.cumsum(jnp.concatenate([jnp.ones((1,), jnp.int32),
                                      (key[1:] != key[:-1]).astype(jnp.int32)])) - 1
    # Rows without a target get the out-of-range segment n, which the sum drops. (Summed into
    # one shared segment, as before, their float32 adds all hit one [D] row: 1.2 s per catalog
    # chunk at N = 131072 when half the rows had their target in another chunk; docs/perf.md.)
    seg = jnp.where(key < v, seg, n)
    sums = jax.ops.segment_sum(contrib, seg, num_segments=n, indices_are_sorted=True)
    # Target item of each segment; unused segment ids get distinct rows >= v, which the scatter
    # drops, so the rows are unique and increasing.
    rows = (v + jnp.arange(n, dtype=jnp.int32)).at[seg].set(key, mode="drop")
    flags = dict(indices_are_sorted=True, unique_indices=True)
    cur = dc.at[rows].get(mode="fill", fill_value=0, **flags).astype(jnp.float32)
    return dc.at[rows].set((cur + sums).astype(dc.dtype), mode="drop", **flags)


def _grads(chunks, interpret, res, g_n, filter_eps=None):
    embeddings, classifier, targets, valid, lse, *fused = res
    a = fused[0] if fused else None  # sum_v softmax_rv c_v from a fused_de forward
    n, d = embeddings.shape
    chunks = _as_chunks(chunks, *classifier.shape)
    g_valid = jnp.where(valid, g_n.astype(jnp.float32), 0.0)
    t_valid = jnp.where(valid, targets, -1).astype(jnp.int32)
    # Target term outside the kernels ("xla"): they then form softmax * g only.
    outside = filter_eps is None and all(
        cfg.bwd_onehot == "xla" and cfg.bwd_mode == "two_pass" for _, _, cfg in chunks)
    de_total, dcs = None, []
    for lo, hi, cfg in chunks:
        c = classifier[lo:hi]
        e_pad, c_pad = _padded(embeddings, c, cfg)
        n_pad = e_pad.shape[0]
        # Targets outside this chunk never match one of its columns.
        t_chunk = jnp.where((t_valid >= lo) & (t_valid < hi), t_valid - lo, -1)
        de, dc = backward.grads(e_pad, c_pad, hi - lo, _pad_vec(lse * common.LOG2E, n_pad, 0.0),
                                _pad_vec(t_chunk, n_pad, -1), _pad_vec(g_valid, n_pad, 0.0),
                                cfg, interpret=interpret,
                                de_dtype=jnp.float32 if len(chunks) > 1 or outside else None,
                                filter_eps=filter_eps, onehot=not outside, want_de=a is None)
        if a is None:
            de = de[:n, :d]
            de_total = de if de_total is None else de_total + de
        dc = dc[:, :d]
        if outside:
            dc = _target_term_into_dc(dc, embeddings, t_chunk, g_valid)
        dcs.append(dc)
    if a is not None:  # (a fused forward implies ``outside``)
        de_total = g_valid[:, None] * a
    if outside:  # dE_r -= g_r c_{t_r} (rows with t = -1, e.g. a vocab shard's foreign targets: 0)
        c_t = jnp.take(classifier, jnp.maximum(t_valid, 0), axis=0).astype(jnp.float32)
        de_total = de_total - jnp.where(t_valid >= 0, g_valid, 0.0)[:, None] * c_t
    dc = dcs[0] if len(dcs) == 1 else jnp.concatenate(dcs, axis=0)
    return de_total.astype(embeddings.dtype), dc.astype(classifier.dtype), None, None


_row_losses.defvjp(_fwd, _bwd)


# Gradient filtering: the same forward (same loss bits); the backward runs on the catalog ordered
# by mean logit (``reference.by_mean_logit``, shared with impl="xla") and skips negligible tiles.
@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _row_losses_filtered(embeddings, classifier, targets, valid, chunks, interpret, filter_eps):
    return _fwd_plain(embeddings, classifier, targets, valid, chunks, interpret)[0]


def _fwd_filtered(embeddings, classifier, targets, valid, chunks, interpret, filter_eps):
    del filter_eps
    return _fwd_plain(embeddings, classifier, targets, valid, chunks, interpret)


def _bwd_filtered(chunks, interpret, filter_eps, res, g_n):
    return reference.by_mean_logit(
        lambda r, g: _grads(chunks, interpret, r, g, filter_eps), res, g_n)


_row_losses_filtered.defvjp(_fwd_filtered, _bwd_filtered)

# Element offsets inside the kernels are 32-bit (cf. apple/ml-cross-entropy#37): a catalog whose
# padded table has 2^31 elements or more is cut into chunks below that, one launch each.
_MAX_ELEMENTS = 2**31 - 1


def catalog_chunks(v: int, d: int, max_rows: int | None = None) -> tuple[tuple[int, int], ...]:
    """[lo, hi) row ranges of the classifier, each addressable with 32-bit element offsets."""
    d_pad = max(_MIN_DOT, common.next_pow2(d))
    rows = _MAX_ELEMENTS // d_pad if max_rows is None else min(max_rows, _MAX_ELEMENTS // d_pad)
    if rows < 1:
        raise ValueError(f"max_rows={max_rows} must be >= 1")
    k = -(-v // rows)
    size = -(-v // k)  # balanced chunks
    return tuple((lo, min(v, lo + size)) for lo in range(0, v, size))


def pallas_row_losses(embeddings, classifier, targets, valid, *, interpret=False, block_n=None,
                      block_v=None, config: common.KernelConfig | None = None,
                      max_chunk_rows: int | None = None, filter_eps: float | None = None):
    """float32[N] per-row CCE losses (0 on rows with valid == False) by the Pallas kernels.

    Catalogs past the kernels' 32-bit offsets (V x D >= 2^31, e.g. 10M items at D = 256) run as
    several chunks whose log-sum-exps are merged; ``max_chunk_rows`` caps the chunk size (tests).
    ``filter_eps`` (static float, None = exact): gradient filtering, see ``backward.py``; the
    tiles are the backward's ``bwd_block_n`` x ``bwd_block_v`` within each catalog chunk.
    """
    n, d = embeddings.shape
    d_pad = max(_MIN_DOT, common.next_pow2(d))
    if n * d_pad >= 2**31:
        raise ValueError(f"embeddings have {n} x {d_pad} >= 2^31 elements, past the kernels' "
                         f"32-bit offsets; split the batch (or use impl='xla')")
    chunks = tuple(
        (lo, hi, resolve_config(n, hi - lo, d, block_n, block_v, config, embeddings.dtype.itemsize))
        for lo, hi in catalog_chunks(classifier.shape[0], d, max_chunk_rows))
    if filter_eps is None:
        return _row_losses(embeddings, classifier, targets, valid, chunks, interpret)
    return _row_losses_filtered(embeddings, classifier, targets, valid, chunks, interpret,
                                float(filter_eps))
