"""``linear_cross_entropy``: exact softmax cross-entropy over a linear classifier (validation,
dispatch, reductions), plus its forward / backward halves from ``lse.py``."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pallas_kernels import vocab_parallel as vp
from pallas_kernels.cce import ops, reference
from pallas_kernels.cce.config import CCEConfig
from pallas_kernels.cce.lse import (
    XLA_BLOCK_N,
    XLA_BLOCK_V,
    as_arrays,
    check_config,
    check_inputs,
    linear_cross_entropy_bwd,
    linear_cross_entropy_fwd,
    prepare,
    resolve_impl,
)

__all__ = ["linear_cross_entropy", "linear_cross_entropy_fwd", "linear_cross_entropy_bwd"]

REDUCTIONS = ("mean", "sum", "none")


def reduce_rows(rows, valid, reduction: str):
    """float32 "none" rows, their "sum", or their "mean" over the counted rows (0 rows -> 0)."""
    if reduction == "none":
        return rows
    total = jnp.sum(rows)
    if reduction == "sum":
        return total
    return total / jnp.maximum(jnp.sum(valid.astype(jnp.float32)), 1.0)


def linear_cross_entropy(
    embeddings: jax.Array,
    classifier: jax.Array,
    targets: jax.Array,
    *,
    where: jax.Array | None = None,
    reduction: str = "mean",
    impl: str = "auto",
    config: CCEConfig | None = None,
    vocab_parallel: vp.VocabParallelOptions | None = None,
) -> jax.Array:
    """Softmax cross-entropy of ``embeddings @ classifier.T`` without the ``N x V`` logits.

    Args:
      embeddings: [N, D] float32/bfloat16/float16 rows (e.g. hidden states).
      classifier: [V, D] item table; cast to ``embeddings.dtype`` for the compute (the gradient
        comes back in its own dtype). With ``vocab_parallel``: the whole row-sharded table
        [R, D] (see ``VocabParallelOptions``).
      targets: int[N] labels in [0, V); values on rows with ``where=False`` are never used.
      where: optional bool[N], rows that count. Masked rows contribute no loss and no gradient.
      reduction: "mean" over counted rows (0 rows -> 0.0), "sum", or "none" (float32[N], 0 on
        masked rows).
      impl: "pallas" (GPU kernels), "interpret" (the same kernels in the Pallas interpreter,
        any backend; small shapes), "xla" (exact chunked pure JAX), "naive" (materialised
        logits; small shapes only) or "auto" (pallas on a GPU, xla elsewhere).
      config: optional ``CCEConfig`` (tiles; ``None`` fields are chosen from the shapes by
        ``pallas_kernels.cce.get_default``).
      vocab_parallel: optional ``VocabParallelOptions``: the classifier rows are sharded over a
        mesh axis and never gathered.

    Returns:
      float32 scalar ("mean", "sum") or float32[N] ("none"). Float32 accumulation throughout.
    """
    embeddings, classifier, targets, where = as_arrays(embeddings, classifier, targets, where)
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r} is not one of {REDUCTIONS}")
    check_config(config)
    if vocab_parallel is not None:
        if not isinstance(vocab_parallel, vp.VocabParallelOptions):
            raise ValueError("vocab_parallel must be a pallas_kernels.VocabParallelOptions or None")
        if impl == "naive":
            raise ValueError("impl='naive' has no vocabulary-parallel form; use impl='auto', "
                             "'pallas', 'interpret' or 'xla'")
        rows, valid = vp.vocab_parallel_cross_entropy(
            embeddings, classifier, targets, where=where, impl=impl, config=config,
            options=vocab_parallel)
        return reduce_rows(rows, valid, reduction)
    check_inputs(embeddings, classifier, targets, where)
    impl = resolve_impl(impl)
    e, c, t, valid = prepare(embeddings, classifier, targets, where)
    if e.shape[0] == 0:
        rows = jnp.zeros((0,), jnp.float32)
    elif impl == "naive":
        rows = reference.naive_row_losses(e, c, t, valid)
    elif impl == "xla":
        bn = XLA_BLOCK_N if config is None or config.block_n is None else config.block_n
        bv = XLA_BLOCK_V if config is None or config.block_v is None else config.block_v
        rows = reference.chunked_row_losses(e, c, t, valid, bn, bv)
    else:
        rows = ops.row_losses(e, c, t, valid, interpret=impl == "interpret", cfg=config)
    return reduce_rows(rows, valid, reduction)
