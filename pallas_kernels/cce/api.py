"""Public entry point: ``linear_cross_entropy`` (validation, dispatch, reductions)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from pallas_kernels.cce import reference

_REDUCTIONS = ("mean", "sum", "none")
_IMPLS = ("auto", "pallas", "xla", "naive")
_FLOAT_DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _check_positive(name: str, value) -> None:
    if value is not None and (not isinstance(value, (int, np.integer)) or value <= 0):
        raise ValueError(f"{name} must be a positive int or None, got {value!r}")


def _validate(embeddings, classifier, targets, where, reduction, impl, filter_eps) -> None:
    if embeddings.ndim != 2 or classifier.ndim != 2:
        raise ValueError(
            f"embeddings must be [N, D] and classifier [V, D]; got shapes {embeddings.shape} and "
            f"{classifier.shape} (flatten batch and time into N first)")
    n, d = embeddings.shape
    v, d_c = classifier.shape
    if d != d_c:
        raise ValueError(f"embeddings have D={d} but classifier rows have D={d_c}; they must match")
    if v < 1:
        raise ValueError("classifier has V=0 rows; the catalog needs at least one item")
    for name, x in (("embeddings", embeddings), ("classifier", classifier)):
        if x.dtype not in _FLOAT_DTYPES:
            raise ValueError(f"{name} dtype {x.dtype} is not supported; use float32, bfloat16 or float16")
    if targets.shape != (n,):
        raise ValueError(f"targets must have shape ({n},) to match embeddings; got {targets.shape}")
    if not jnp.issubdtype(targets.dtype, jnp.integer):
        raise ValueError(f"targets must be an integer array of labels in [0, V); got dtype {targets.dtype}")
    if where is not None:
        if where.shape != (n,):
            raise ValueError(f"where must have shape ({n},) to match embeddings; got {where.shape}")
        if where.dtype != jnp.bool_:
            raise ValueError(f"where must be a bool mask of rows that count; got dtype {where.dtype}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction={reduction!r} is not one of {_REDUCTIONS}")
    if impl not in _IMPLS:
        raise ValueError(f"impl={impl!r} is not one of {_IMPLS}")
    if filter_eps is not None:
        is_float = isinstance(filter_eps, (float, np.floating)) and not isinstance(filter_eps, bool)
        if not is_float or not 0.0 < float(filter_eps) < 1.0:
            raise ValueError(f"filter_eps={filter_eps!r} must be None (exact gradients) or a "
                             f"Python float in (0, 1), e.g. filter_eps=2.0**-12")
        if impl == "naive":
            raise ValueError("filter_eps is not supported by impl='naive' (plain autodiff); use "
                             "impl='xla' or 'pallas', or filter_eps=None")
    # Target range: only checkable when the values are known (not under jit).
    if _is_concrete(targets) and (where is None or _is_concrete(where)) and n > 0:
        t = np.asarray(targets)
        ok = np.ones(n, bool) if where is None else np.asarray(where)
        bad = ok & ((t < 0) | (t >= v))
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(
                f"{int(bad.sum())} targets of counted rows are outside [0, {v}) (first: row {i} = "
                f"{int(t[i])}); targets are labels item_id - 1, mask padding rows with where=False")


def _on_gpu() -> bool:
    return jax.default_backend() == "gpu"


def linear_cross_entropy(
    embeddings: jax.Array,
    classifier: jax.Array,
    targets: jax.Array,
    *,
    where: jax.Array | None = None,
    reduction: str = "mean",
    impl: str = "auto",
    interpret: bool = False,
    block_n: int | None = None,
    block_v: int | None = None,
    filter_eps: float | None = None,
    kernel_config=None,
) -> jax.Array:
    """Softmax cross-entropy of ``embeddings @ classifier.T`` without the ``N x V`` logits.

    Args:
      embeddings: [N, D] float32/bfloat16/float16 rows (e.g. hidden states).
      classifier: [V, D] item table; cast to ``embeddings.dtype`` for the compute (the gradient
        comes back in its own dtype).
      targets: int[N] labels in [0, V); values on rows with ``where=False`` are never used.
      where: optional bool[N], rows that count. Masked rows contribute no loss and no gradient.
      reduction: "mean" over counted rows (0 rows -> 0.0), "sum", or "none" (float32[N], 0 on
        masked rows).
      impl: "pallas" (GPU kernels, or the CPU interpreter with ``interpret=True``), "xla" (exact
        chunked pure JAX), "naive" (materialised logits; small shapes only) or "auto" (pallas on
        GPU, xla elsewhere).
      interpret: run the Pallas kernels in the interpreter (CPU tests).
      block_n, block_v: rows x catalog columns per tile (None: the implementation's default;
        "xla": 4096 x 2048, the largest float32 temporary).
      filter_eps: None (default: exact gradients, the unfiltered code path) or a float in
        (0, 1): gradient filtering as in CCE (Wijmans et al. 2024). The backward orders the
        catalog by mean logit ``mean_r(e_r) . c_v`` over the counted rows and skips the
        gradient GEMMs of each (row tile x catalog tile) whose every |softmax - onehot| (the
        unscaled probability error, before the cotangent) is below ``filter_eps``. The loss is
        unchanged; the gradients then depend on the tile sizes ("pallas": the backward tiles;
        "xla": block_n x block_v) and are not exact. Not with impl="naive". Off by default
        because exactness is the point at recommender scale: a fresh model has every
        probability (~1/V) below any useful eps, so filtering would drop all negative gradients
        outside the tiles that hold a target. See docs/cce_filtering.md.
      kernel_config: optional ``pallas_kernels.cce.common.KernelConfig`` (Pallas tiles, warps,
        stages, catalog splits, backward scheme); block_n / block_v override its tiles.

    Returns:
      float32 scalar ("mean", "sum") or float32[N] ("none"). Float32 accumulation throughout.
    """
    embeddings = jnp.asarray(embeddings)
    classifier = jnp.asarray(classifier)
    if where is not None and not isinstance(where, jax.core.Tracer):
        where = jnp.asarray(where)
    targets = jnp.asarray(targets) if not isinstance(targets, jax.core.Tracer) else targets
    _validate(embeddings, classifier, targets, where, reduction, impl, filter_eps)
    _check_positive("block_n", block_n)
    _check_positive("block_v", block_v)
    n = embeddings.shape[0]
    valid = jnp.ones((n,), jnp.bool_) if where is None else where
    if where is not None:
        # Masked rows (padding) may hold anything, NaN included: zero them so that g = 0 times
        # their logits can never put a NaN into dC. Autodiff of the select zeroes their dE.
        embeddings = jnp.where(where[:, None], embeddings, jnp.zeros((), embeddings.dtype))
    targets = targets.astype(jnp.int32)
    # One compute dtype; the cast is differentiated, so dC returns in the classifier's dtype.
    classifier = classifier.astype(embeddings.dtype)

    if impl == "auto":
        impl = "pallas" if _on_gpu() else "xla"
    if impl == "pallas" and not interpret and not _on_gpu():
        raise ValueError(f"impl='pallas' compiles Triton kernels and needs a GPU (backend is "
                         f"{jax.default_backend()!r}); pass interpret=True or impl='xla'")
    if n == 0:
        rows = jnp.zeros((0,), jnp.float32)
    elif impl == "naive":
        rows = reference.naive_row_losses(embeddings, classifier, targets, valid)
    elif impl == "xla":
        if filter_eps is None:
            rows = reference.chunked_row_losses(
                embeddings, classifier, targets, valid, block_n or 4096, block_v or 2048)
        else:
            rows = reference.chunked_row_losses_filtered(
                embeddings, classifier, targets, valid, block_n or 4096, block_v or 2048,
                float(filter_eps))
    else:
        from pallas_kernels.cce import ops  # imported lazily: only the Pallas path needs it

        rows = ops.pallas_row_losses(
            embeddings, classifier, targets, valid, interpret=interpret, block_n=block_n,
            block_v=block_v, config=kernel_config, filter_eps=filter_eps)

    if reduction == "none":
        return rows
    total = jnp.sum(rows)
    if reduction == "sum":
        return total
    count = jnp.sum(valid.astype(jnp.float32))
    return total / jnp.maximum(count, 1.0)
