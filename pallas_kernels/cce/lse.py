"""The CCE forward that returns the log-sum-exp, and the backward that takes one.

``linear_cross_entropy_fwd`` -> (row losses, lse) and ``linear_cross_entropy_bwd(..., lse,
d_rows)`` -> (dE, dC) split ``linear_cross_entropy`` at its log-sum-exp, so a caller can merge
log-sum-exps first (vocabulary parallelism does: ``pallas_kernels.vocab_parallel``). Neither is
differentiable by JAX; together they are the loss's forward and backward. Input checks and the
``impl`` choice shared with ``api.py`` live here too.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from pallas_kernels.cce import ops, reference
from pallas_kernels.cce.config import CCEConfig

IMPLS = ("auto", "pallas", "interpret", "xla", "naive")
_FLOAT_DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)
XLA_BLOCK_N, XLA_BLOCK_V = 4096, 2048  # impl="xla" row x catalog chunk (largest f32 temporary)


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_inputs(embeddings, classifier, targets, where, *, allow_no_target: bool = False) -> None:
    """One-line ValueErrors for shapes, dtypes and (when concrete) target ranges
    (``allow_no_target``: -1 marks a counted row without a target)."""
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
    # Target range: only checkable when the values are known (not under jit).
    if _is_concrete(targets) and (where is None or _is_concrete(where)) and n:
        t = np.asarray(targets)
        ok = np.ones(n, bool) if where is None else np.asarray(where)
        bad = ok & ((t < (-1 if allow_no_target else 0)) | (t >= v))
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(
                f"{int(bad.sum())} targets of counted rows are outside [0, {v}) (first: row {i} = "
                f"{int(t[i])}); targets are labels item_id - 1, mask padding rows with where=False")


def resolve_impl(impl: str, allowed=IMPLS) -> str:
    """"auto" -> "pallas" on a GPU, "xla" elsewhere; "pallas" without a GPU is refused."""
    if impl not in allowed:
        raise ValueError(f"impl={impl!r} is not one of {allowed}")
    on_gpu = jax.default_backend() == "gpu"
    if impl == "auto":
        return "pallas" if on_gpu else "xla"
    if impl == "pallas" and not on_gpu:
        raise ValueError(f"impl='pallas' compiles Triton kernels and needs a GPU (backend is "
                         f"{jax.default_backend()!r}); use impl='interpret' or impl='xla'")
    return impl


def check_config(config) -> None:
    if config is not None and not isinstance(config, CCEConfig):
        raise ValueError(f"config must be a pallas_kernels.CCEConfig or None, got "
                         f"{type(config).__name__}")


def prepare(embeddings, classifier, targets, where):
    """(embeddings, classifier in the embeddings' dtype, int32 targets, valid bool[N]).

    Masked rows (padding) may hold anything, NaN included: they are zeroed so that a zero
    cotangent times their logits can never put a NaN into dC; autodiff of the select zeroes
    their dE."""
    n = embeddings.shape[0]
    valid = jnp.ones((n,), jnp.bool_) if where is None else where
    if where is not None:
        embeddings = jnp.where(where[:, None], embeddings, jnp.zeros((), embeddings.dtype))
    # One compute dtype; the cast is differentiated, so dC returns in the classifier's dtype.
    return embeddings, classifier.astype(embeddings.dtype), targets.astype(jnp.int32), valid


def as_arrays(embeddings, classifier, targets, where):
    embeddings, classifier = jnp.asarray(embeddings), jnp.asarray(classifier)
    targets = targets if isinstance(targets, jax.core.Tracer) else jnp.asarray(targets)
    if where is not None and not isinstance(where, jax.core.Tracer):
        where = jnp.asarray(where)
    return embeddings, classifier, targets, where


def _xla_blocks(config):
    bn = XLA_BLOCK_N if config is None or config.block_n is None else config.block_n
    bv = XLA_BLOCK_V if config is None or config.block_v is None else config.block_v
    return bn, bv


def linear_cross_entropy_fwd(embeddings, classifier, targets, *, where=None, impl: str = "auto",
                             config: CCEConfig | None = None):
    """Per-row CCE losses and log-sum-exps, without the ``N x V`` logits (not differentiable).

    Args as ``linear_cross_entropy`` (``impl`` one of "auto", "pallas", "interpret", "xla"),
    except that a target of -1 marks a counted row without a target (its loss is its lse; a
    vocabulary shard that does not own the row's target).
    Returns ``(row_losses float32[N], lse float32[N])``: ``lse_r = logsumexp_v(e_r . c_v)`` and
    ``row_losses_r = lse_r - e_r . c_{t_r}`` (0 on masked rows, whose ``lse`` is that of a zero
    embedding, ``log V``).
    """
    embeddings, classifier, targets, where = as_arrays(embeddings, classifier, targets, where)
    check_inputs(embeddings, classifier, targets, where, allow_no_target=True)
    check_config(config)
    impl = resolve_impl(impl, IMPLS[:-1])
    e, c, t, valid = prepare(embeddings, classifier, targets, where)
    if e.shape[0] == 0:
        return jnp.zeros((0,), jnp.float32), jnp.zeros((0,), jnp.float32)
    if impl == "xla":
        lse = reference.chunked_lse(e, c, *_xla_blocks(config))
        has_target = (t >= 0) & (t < c.shape[0])
        z_t = reference.target_logits(e, c, jnp.where(has_target, t, 0), valid & has_target)
        return jnp.where(valid, lse - z_t, 0.0), lse
    return ops.forward_with_lse(e, c, t, valid, interpret=impl == "interpret", cfg=config)


def linear_cross_entropy_bwd(embeddings, classifier, targets, lse, d_rows, *, where=None,
                             impl: str = "auto", config: CCEConfig | None = None):
    """Gradients of ``sum_r d_rows[r] * loss_r`` given the rows' log-sum-exp ``lse``.

    Args as ``linear_cross_entropy_fwd``, plus ``lse`` (float32[N], e.g. from it, or merged over
    vocabulary shards) and ``d_rows`` (float32[N], the cotangent of each row's loss). A counted
    row whose target is -1 gets no target term (a vocabulary shard that does not own it).
    Returns ``(d_embeddings, d_classifier)`` in the inputs' dtypes.
    """
    embeddings, classifier, targets, where = as_arrays(embeddings, classifier, targets, where)
    check_inputs(embeddings, classifier, targets, where, allow_no_target=True)
    check_config(config)
    n = embeddings.shape[0]
    for name, x in (("lse", lse), ("d_rows", d_rows)):
        if jnp.shape(x) != (n,):
            raise ValueError(f"{name} must have shape ({n},) to match embeddings; got "
                             f"{jnp.shape(x)}")
    impl = resolve_impl(impl, IMPLS[:-1])
    e, c, t, valid = prepare(embeddings, classifier, targets, where)
    lse = jnp.asarray(lse, jnp.float32)
    if n == 0:
        return jnp.zeros_like(embeddings), jnp.zeros_like(classifier)
    if impl == "xla":
        # (The chunked backward treats a target of -1 as no target.)
        de, dc = reference.chunked_grads(e, c, t, valid, lse, d_rows, *_xla_blocks(config))
    else:
        de, dc = ops.backward_from_lse(e, c, t, valid, lse, d_rows, interpret=impl == "interpret",
                              cfg=config)
    if where is not None:
        de = jnp.where(where[:, None], de, jnp.zeros((), de.dtype))
    return de.astype(embeddings.dtype), dc.astype(classifier.dtype)
