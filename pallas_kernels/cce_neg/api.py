"""``sampled_linear_cross_entropy``: CCE- (sampled softmax with in-kernel negatives) behind
``jax.custom_vjp`` (validation, dispatch to the Pallas kernels or XLA, reductions), and its
forward / backward halves ``sampled_linear_cross_entropy_fwd`` / ``_bwd``.

The semantics (exclusion of negatives equal to the target, logQ corrections) are documented in
``reference.py``; the sampler in ``sampling.py``.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from pallas_kernels import vocab_parallel as vp
from pallas_kernels.cce_neg import fused, kernels, sampling, xla_impl
from pallas_kernels.cce_neg.config import (
    SampledConfig,
    Static,
    default_neg_block,
    default_row_block,
    pow2,
    triton_width_ok,
)
from pallas_kernels.cce_neg.reference import reduce_rows

__all__ = ["sampled_linear_cross_entropy", "sampled_linear_cross_entropy_fwd",
           "sampled_linear_cross_entropy_bwd"]

_IMPLS = ("auto", "pallas", "interpret", "xla")


def _impl_module(st: Static):
    return xla_impl if st.impl == "xla" else kernels


@functools.lru_cache(maxsize=None)
def _row_loss_fn(st: Static):
    """custom_vjp function ``(E, C, t, w, seed_u32, table) -> loss f32[N]`` (0 on masked rows).

    Each implementation module provides ``forward(...) -> (lse, s_pos, aux)`` and
    ``backward(..., lse, aux) -> (dE, dC)``; ``aux`` is an O(N) residual (or None).
    """
    impl = _impl_module(st)

    @jax.custom_vjp
    def row_loss(e, c, t, w, seed_u32, table):
        lse, s_pos, _ = impl.forward(st, e, c.astype(e.dtype), t, seed_u32, table)
        return jnp.where(w, lse - s_pos, 0.0)

    def fwd(e, c, t, w, seed_u32, table):
        ce = c.astype(e.dtype)
        lse, s_pos, aux = impl.forward(st, e, ce, t, seed_u32, table)
        # c itself (a parameter, no copy) only tells the backward the dtype dC leaves in.
        return jnp.where(w, lse - s_pos, 0.0), (e, ce, c, t, w, seed_u32, table, lse, aux)

    def bwd(res, g):
        e, ce, c, t, w, seed_u32, table, lse, aux = res
        g_rows = jnp.where(w, g, 0.0).astype(jnp.float32)
        de, dc = impl.backward(st, e, ce, t, g_rows, seed_u32, table, lse, aux)
        return de.astype(e.dtype), dc.astype(c.dtype), None, None, None, None

    row_loss.defvjp(fwd, bwd)
    return row_loss


def _weighted_sum(weights, row_loss):
    return jnp.sum(jnp.where(weights != 0, weights * row_loss, 0.0))


@functools.lru_cache(maxsize=None)
def _reduced_loss_fn(st: Static):
    """custom_vjp function ``(E, C, t, weights f32[N], seed_u32, table) -> sum_r weights[r] *
    loss_r`` whose forward rule (used under differentiation) runs the one-pass kernel of
    ``fused.py`` and keeps the gradients for a cotangent of 1; the backward rule scales them.
    Without differentiation it runs the plain forward kernel."""

    @jax.custom_vjp
    def loss(e, c, t, weights, seed_u32, table):
        lse, s_pos, _ = kernels.forward(st, e, c.astype(e.dtype), t, seed_u32, table)
        return _weighted_sum(weights, lse - s_pos)

    def fwd(e, c, t, weights, seed_u32, table):
        rows, de, dc = fused.value_and_grad(st, e, c.astype(e.dtype), t, weights, seed_u32, table)
        return _weighted_sum(weights, rows), (de, dc, c)

    def bwd(res, g):
        de, dc, c = res  # (c only for the dtype dC leaves in)
        return ((g * de.astype(jnp.float32)).astype(de.dtype),
                (g * dc.astype(jnp.float32)).astype(c.dtype), None, None, None, None)

    loss.defvjp(fwd, bwd)
    return loss


def _check_inputs(embeddings, classifier, targets, where):
    if embeddings.ndim != 2 or classifier.ndim != 2:
        raise ValueError(f"embeddings [N, D] and classifier [V, D] must be 2-D, got shapes "
                         f"{embeddings.shape} and {classifier.shape}")
    n_rows, d = embeddings.shape
    if classifier.shape[1] != d:
        raise ValueError(f"hidden sizes differ: embeddings D={d}, classifier D={classifier.shape[1]}")
    if targets.shape != (n_rows,):
        raise ValueError(f"targets must have shape ({n_rows},), got {targets.shape}")
    if not jnp.issubdtype(targets.dtype, jnp.integer):
        raise ValueError(f"targets must be integer labels, got dtype {targets.dtype}")
    if where is not None and where.shape != (n_rows,):
        raise ValueError(f"where must have shape ({n_rows},), got {where.shape}")


def _static(embeddings, classifier, num_negatives, sampler, sharing, impl, config) -> Static:
    """Validated settings of one call (one-line errors for everything a caller can get wrong)."""
    if config is not None and not isinstance(config, SampledConfig):
        raise ValueError(f"config must be a pallas_kernels.SampledConfig or None, got "
                         f"{type(config).__name__}")
    cfg = config or SampledConfig()
    d = embeddings.shape[1]
    num_items = classifier.shape[0]
    sampling.check_sampling_args(num_negatives, num_items, sharing, cfg.block_rows)
    sampling.check_sampler(sampler, num_items)
    if impl not in _IMPLS:
        raise ValueError(f"impl must be one of {_IMPLS}, got {impl!r}")
    on_gpu = jax.default_backend() == "gpu"
    if impl == "auto":
        impl = "pallas" if (on_gpu and triton_width_ok(d)) else "xla"
    elif impl == "pallas" and not on_gpu:
        raise ValueError(f"impl='pallas' compiles Triton kernels and needs a GPU (backend is "
                         f"{jax.default_backend()!r}); use impl='interpret' or impl='xla'")
    row_block = default_row_block(d) if cfg.row_block is None else cfg.row_block
    neg_block = (default_neg_block(d, jnp.dtype(embeddings.dtype).itemsize)
                 if cfg.neg_block is None else cfg.neg_block)
    if impl in ("pallas", "interpret"):
        if not triton_width_ok(d):
            raise ValueError(f"impl={impl!r} needs D a power of two >= 16 (Triton blocks), got "
                             f"D={d}; use impl='xla'")
        for name, val, lo in (("block_rows", cfg.block_rows, 16), ("row_block", row_block, 8),
                              ("neg_block", neg_block, 16)):
            if not (pow2(val) and val >= lo):
                raise ValueError(f"impl={impl!r} needs SampledConfig.{name} a power of two >= "
                                 f"{lo}, got {val}")
    return Static(int(num_negatives), int(num_items),
                  "uniform" if sampler is None else "popularity", sharing, int(cfg.block_rows),
                  "xla" if impl == "xla" else "pallas", impl == "interpret", int(row_block),
                  int(neg_block), cfg.num_warps, cfg.num_stages)


def _prepared(targets, where, n_rows):
    w = jnp.ones((n_rows,), bool) if where is None else where.astype(bool)
    # Masked rows may hold any label (padding, -100): clamp so gathers stay in range.
    return jnp.where(w, targets.astype(jnp.int32), 0), w


def sampled_linear_cross_entropy(
    embeddings: jax.Array,
    classifier: jax.Array,
    targets: jax.Array,
    *,
    num_negatives: int,
    seed,
    sampler: sampling.PopularityTable | None = None,
    sharing: str = "row",
    where: jax.Array | None = None,
    reduction: str = "mean",
    impl: str = "auto",
    config: SampledConfig | None = None,
    vocab_parallel: vp.VocabParallelOptions | None = None,
) -> jax.Array:
    """Sampled softmax cross-entropy with in-kernel negatives (CCE-).

    Args:
      embeddings: ``[N, D]`` float (bf16/f16/f32) query rows.
      classifier: ``[V, D]`` item embeddings (read in ``embeddings.dtype``; its gradient
        leaves in the classifier's dtype, e.g. float32 from the float32 dC buffer). With
        ``vocab_parallel``: the whole row-sharded table ``[R, D]``.
      targets: int ``[N]`` labels in ``[0, V)`` (ignored where ``where`` is False).
      num_negatives: ``n`` negatives per row (per block of rows with ``sharing="block"``; in
        expectation over all shards with ``vocab_parallel``).
      seed: int or int32/uint32 scalar (may be traced: use a new one every step).
      sampler: None (uniform over the V items) or a ``PopularityTable``
        (``popularity_table(item_counts)``: ``q ∝ item_counts``).
      sharing: ``"row"`` (negatives per row) or ``"block"`` (one set per
        ``config.block_rows`` consecutive rows; many times faster, see docs/performance.md).
      where: optional bool ``[N]`` row mask.
      reduction: ``"mean"`` over ``where`` rows, ``"sum"`` or ``"none"`` (f32 ``[N]``).
      impl: ``"pallas"`` (GPU Triton kernels), ``"interpret"`` (the same kernels in the Pallas
        interpreter, any backend), ``"xla"``, or ``"auto"`` (Pallas on a GPU where D is a power
        of two >= 16, XLA elsewhere). With Pallas, row sharing and a scalar reduction the loss
        and both gradients come from one pass over the negatives (``fused.py``).
      config: optional ``SampledConfig`` (tiles; ``None`` fields chosen from D by
        ``pallas_kernels.cce_neg.get_default``).
      vocab_parallel: optional ``VocabParallelOptions`` (row sharing only): the classifier rows
        are sharded over a mesh axis and each shard draws its stratum of the negatives.

    Returns:
      float32 scalar (or ``[N]`` for ``reduction="none"``).
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if vocab_parallel is not None:
        if not isinstance(vocab_parallel, vp.VocabParallelOptions):
            raise ValueError("vocab_parallel must be a pallas_kernels.VocabParallelOptions or None")
        if sharing != "row":
            raise ValueError(f"vocab_parallel runs sharing='row' only (each shard draws its own "
                             f"negatives per row), got sharing={sharing!r}")
        if config is not None and not isinstance(config, SampledConfig):
            raise ValueError("config must be a pallas_kernels.SampledConfig or None")
        if sampler is not None and not isinstance(sampler, sampling.PopularityTable):
            raise ValueError("sampler must be None (uniform) or a PopularityTable")
        rows, w = vp.vocab_parallel_sampled_cross_entropy(
            embeddings, classifier, targets, num_negatives=num_negatives, seed=seed,
            sampler=sampler, where=where, impl=impl, config=config, options=vocab_parallel)
        return reduce_rows(rows, w, reduction)
    _check_inputs(embeddings, classifier, targets, where)
    st = _static(embeddings, classifier, num_negatives, sampler, sharing, impl, config)
    t, w = _prepared(targets, where, embeddings.shape[0])
    seed_u32 = sampling.seed_to_u32(seed)
    # The kernels read the classifier in embeddings.dtype; the cast happens inside the custom
    # VJP, so dC leaves in the classifier's own dtype (float32 parameters get the float32 sum
    # of the dC buffer, not a bf16 rounding of it and a convert back).
    if st.impl == "pallas" and sharing == "row" and reduction != "none":
        weights = w.astype(jnp.float32)
        if reduction == "mean":
            weights = weights / jnp.maximum(w.sum(), 1).astype(jnp.float32)
        return _reduced_loss_fn(st)(embeddings, classifier, t, weights, seed_u32, sampler)
    loss = _row_loss_fn(st)(embeddings, classifier, t, w, seed_u32, sampler)
    return reduce_rows(loss, w, reduction)


def sampled_linear_cross_entropy_fwd(embeddings, classifier, targets, *, num_negatives: int, seed,
                                     sampler: sampling.PopularityTable | None = None,
                                     sharing: str = "row", where=None, impl: str = "auto",
                                     config: SampledConfig | None = None):
    """Per-row CCE- losses and log-sum-exps (not differentiable; pair with ``_bwd``).

    Arguments as ``sampled_linear_cross_entropy``. Returns ``(row_losses f32[N], lse f32[N])``:
    ``lse_r`` is the log of ``exp(s_pos) + sum_kept exp(s_rj + corr_rj)`` (reference.py),
    ``row_losses_r = lse_r - s_pos_r`` (0 on masked rows).
    """
    _check_inputs(embeddings, classifier, targets, where)
    st = _static(embeddings, classifier, num_negatives, sampler, sharing, impl, config)
    t, w = _prepared(targets, where, embeddings.shape[0])
    lse, s_pos, _ = _impl_module(st).forward(st, embeddings, classifier.astype(embeddings.dtype),
                                             t, sampling.seed_to_u32(seed), sampler)
    return jnp.where(w, lse - s_pos, 0.0), lse


def sampled_linear_cross_entropy_bwd(embeddings, classifier, targets, lse, d_rows, *,
                                     num_negatives: int, seed,
                                     sampler: sampling.PopularityTable | None = None,
                                     sharing: str = "row", where=None, impl: str = "auto",
                                     config: SampledConfig | None = None):
    """Gradients ``(d_embeddings, d_classifier)`` of ``sum_r d_rows[r] * loss_r`` given the rows'
    ``lse`` from ``sampled_linear_cross_entropy_fwd`` (same seed and settings: the negatives
    are drawn again). Returned in the inputs' dtypes."""
    _check_inputs(embeddings, classifier, targets, where)
    n = embeddings.shape[0]
    for name, x in (("lse", lse), ("d_rows", d_rows)):
        if jnp.shape(x) != (n,):
            raise ValueError(f"{name} must have shape ({n},) to match embeddings; got "
                             f"{jnp.shape(x)}")
    st = _static(embeddings, classifier, num_negatives, sampler, sharing, impl, config)
    t, w = _prepared(targets, where, n)
    seed_u32 = sampling.seed_to_u32(seed)
    lse = jnp.asarray(lse, jnp.float32)
    g_rows = jnp.where(w, jnp.asarray(d_rows, jnp.float32), 0.0)
    ce = classifier.astype(embeddings.dtype)
    aux = None
    if st.impl == "pallas":  # the kernels take lse minus the uniform per-row correction
        shift = lse
        if st.sampler == "uniform":
            cnt = xla_impl.kept_counts(st, t, seed_u32, sampler)
            shift = lse - (jnp.float32(math.log(st.num_items - 1))
                           - jnp.log(jnp.maximum(cnt, 1.0)))
        aux = shift
    de, dc = _impl_module(st).backward(st, embeddings, ce, t, g_rows, seed_u32, sampler, lse, aux)
    return de.astype(embeddings.dtype), dc.astype(classifier.dtype)
