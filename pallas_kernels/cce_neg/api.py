"""``sampled_linear_cross_entropy``: CCE- behind ``jax.custom_vjp`` (XLA or Pallas kernels).

The semantics (exclusion of negatives equal to the target, logQ corrections) are documented in
``reference.py``; the sampler in ``sampling.py``.
"""

from __future__ import annotations

import functools
import hashlib

import jax
import jax.numpy as jnp
import numpy as np

from pallas_kernels.atomics import ORDERINGS as ATOMIC_ORDERINGS
from pallas_kernels.cce_neg import sampling, xla_impl
from pallas_kernels.cce_neg.config import (DC_ACCUMS, Static, default_neg_block,
                                         default_row_block, pow2, triton_width_ok)
from pallas_kernels.cce_neg.reference import reduce_rows


def _impl_module(st: Static):
    if st.impl == "xla":
        return xla_impl
    from pallas_kernels.cce_neg import kernels  # Pallas imports only when used

    return kernels


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
    from pallas_kernels.cce_neg import fused, kernels

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


_TABLES: dict[tuple, tuple[np.ndarray, ...]] = {}


def _popularity_table(item_counts, num_items: int) -> sampling.PopularityTable:
    if isinstance(item_counts, sampling.PopularityTable):
        table = item_counts
    else:
        counts = sampling._check_counts(item_counts)
        key = (counts.shape, hashlib.sha1(counts.tobytes()).hexdigest())
        if key not in _TABLES:
            if len(_TABLES) > 8:
                _TABLES.clear()
            _TABLES[key] = sampling.popularity_table_np(counts)
        # Cache numpy arrays only: device arrays made inside a trace would leak tracers.
        table = sampling.PopularityTable(*(jnp.asarray(a) for a in _TABLES[key]))
    if table.prob.shape != (num_items,):
        raise ValueError(f"item_counts/table covers {table.prob.shape[0]} items but the classifier "
                         f"has {num_items} rows; pass counts over labels 0..V-1")
    return table


# Bytes of C + dC rows one scatter partition may cover: about half of an H100's 50 MB L2.
_L2_BUDGET = 24 << 20


def sampled_linear_cross_entropy(
    embeddings: jax.Array,
    classifier: jax.Array,
    targets: jax.Array,
    *,
    num_negatives: int,
    seed,
    sampler: str = "uniform",
    item_counts=None,
    sharing: str = "row",
    where: jax.Array | None = None,
    reduction: str = "mean",
    impl: str = "auto",
    interpret: bool = False,
    block_rows: int = 128,
    xla_block_rows: int = 128,
    row_block: int | None = None,
    neg_block: int | None = None,
    num_warps: int | None = None,
    num_stages: int | None = None,
    dc_accum: str = "float32",
    dc_part_items: int | None = 0,
    scatter_rows: int = 8,
    row_sampling: str = "independent",
    dc_block: int = 16,
    atomics: str = "relaxed",
    fused: bool | None = None,
    fused_programs: int | None = None,
) -> jax.Array:
    """Sampled softmax cross-entropy with in-kernel negatives (CCE-).

    Args:
      embeddings: ``[N, D]`` float (bf16/f16/f32) query rows.
      classifier: ``[V, D]`` item embeddings (read in ``embeddings.dtype``; its gradient
        leaves in the classifier's dtype, e.g. float32 from the float32 dC buffer).
      targets: int ``[N]`` labels in ``[0, V)`` (ignored where ``where`` is False).
      num_negatives: ``n`` negatives per row (per tile / per batch when shared).
      seed: int or int32/uint32 scalar (may be traced: use a new one every step).
      sampler: ``"uniform"`` or ``"popularity"`` (``q ∝ item_counts``).
      item_counts: ``[V]`` counts (concrete) or a ``PopularityTable`` (for popularity sampling).
      sharing: ``"row"`` (negatives per row), ``"block"`` (one set per ``block_rows``
        consecutive rows), ``"batch"`` (one set for all rows).
      row_sampling: uniform ``"row"`` sharing only. ``"independent"`` (default): a hash per
        (row, slot), the reference's i.i.d. draws; the Pallas backward adds dC with atomics.
        ``"permutation"``: each row's negatives are i.i.d. uniform, and at each slot the rows of
        a block of ~V consecutive rows draw distinct items (a keyed permutation; < 3/sqrt(V) of
        the draws are dropped), which lets the Pallas backward gather dC per item with no
        atomics: deterministic, float32 sums, no [V, D] buffer, but 1.5-1.7x slower at
        N = 131072, V = 10^6 (docs/perf_sampled.md).
      where: optional bool ``[N]`` row mask.
      reduction: ``"mean"`` over ``where`` rows, ``"sum"`` or ``"none"`` (f32 ``[N]``).
      impl: ``"pallas"`` (GPU Triton kernels; ``interpret=True`` runs them anywhere), ``"xla"``,
        or ``"auto"`` (Pallas on GPU, XLA elsewhere).
      block_rows: rows per shared negative set for ``sharing="block"`` (also the kernel tile).
      row_block / neg_block / num_warps / num_stages: Pallas tiling (row tile for ``"row"``,
        ids per step for shared negatives) and Triton launch parameters. ``row_block=None``:
        16 rows for D <= 64, else 8; ``neg_block=None``: 32 ids up to D = 128, else 64 (both
        measured on an H100, docs/perf_sampled.md).
      dc_block: items per program of the permutation sampler's dC kernel (power of two >= 16;
        16 measured best with 2 warps, which that path uses unless ``num_warps`` is given).
      dc_accum: ``"float32"`` (default) or ``"bfloat16"``: dtype of the buffer the Pallas
        backward accumulates ``dC`` into with atomics (bf16 halves the atomic traffic but rounds
        every partial sum to 8 bits of mantissa; the positive terms, which a popular target
        collects by the thousand with one sign, are then summed per target in float32 outside
        the kernels); the permutation backward does not use it.
      atomics: memory ordering of the Pallas backward's dC atomic adds: ``"relaxed"``
        (default: atomicity only, which is all a sum read after the kernel needs) or
        ``"acq_rel"`` (what ``plt.atomic_add`` emits; ``pallas_kernels/atomics.py``).
      dc_part_items: ``sharing="row"`` backward: ``0`` (default) scatters dC straight to HBM
        from the kernel that also forms dE; ``k > 0`` runs a dE kernel plus an item-partitioned
        scatter kernel (``k`` items per pass, ``None``: as many as fit ``_L2_BUDGET`` bytes of
        C + dC rows) whose atomics stay in L2. Measured 2.4-3x slower on an H200, and still
        slower with relaxed atomics on an H100 (docs/perf_sampled.md): kept as an option, not
        the default. ``scatter_rows``: its tile.
      fused: Pallas uniform/popularity ``"row"`` sharing with the atomic backward
        (``row_sampling="independent"``, ``dc_part_items=0``) and a scalar ``reduction``:
        ``True`` computes the gradients during the forward pass (``fused.py``: one gather of
        each sampled classifier row instead of two); ``False`` runs the forward and backward
        kernels; ``None`` (default): fused wherever it applies. H100, N = 131072, n = 511,
        V = 10^6: f+b 5-16% faster than two passes (docs/perf_sampled.md).
      fused_programs: programs of the fused kernel's persistent grid (``None``:
        ``fused.DEFAULT_PROGRAMS`` = 4096); its scratch holds ``fused_programs * n * row_block``
        float32 logits (64 MiB at n = 511, 8 rows), whatever N is.

    Returns:
      float32 scalar (or ``[N]`` for ``reduction="none"``).
    """
    if embeddings.ndim != 2 or classifier.ndim != 2:
        raise ValueError(f"embeddings [N, D] and classifier [V, D] must be 2-D, got shapes "
                         f"{embeddings.shape} and {classifier.shape}")
    n_rows, d = embeddings.shape
    num_items = classifier.shape[0]
    if classifier.shape[1] != d:
        raise ValueError(f"hidden sizes differ: embeddings D={d}, classifier D={classifier.shape[1]}")
    if targets.shape != (n_rows,):
        raise ValueError(f"targets must have shape ({n_rows},), got {targets.shape}")
    if not jnp.issubdtype(targets.dtype, jnp.integer):
        raise ValueError(f"targets must be integer labels, got dtype {targets.dtype}")
    if where is not None and where.shape != (n_rows,):
        raise ValueError(f"where must have shape ({n_rows},), got {where.shape}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    sampling.check_sampling_args(num_negatives, num_items, sampler, sharing, block_rows,
                                 row_sampling)
    if impl == "auto":
        impl = "pallas" if (jax.default_backend() == "gpu" and triton_width_ok(d)) else "xla"
    if row_block is None:
        row_block = default_row_block(d)
    if neg_block is None:
        neg_block = default_neg_block(d)
    if impl not in ("pallas", "xla"):
        raise ValueError(f"impl must be 'auto', 'pallas' or 'xla', got {impl!r}")
    if impl == "pallas":
        if not triton_width_ok(d):
            raise ValueError(f"impl='pallas' needs D a power of two >= 16 (Triton blocks), got "
                             f"D={d}; use impl='xla'")
        for name, val, lo in (("block_rows", block_rows, 16), ("row_block", row_block, 8),
                              ("neg_block", neg_block, 16), ("dc_block", dc_block, 16)):
            if not (pow2(val) and val >= lo):
                raise ValueError(f"impl='pallas' needs {name} a power of two >= {lo}, got {val}")
    if fused_programs is not None and fused_programs < 1:
        raise ValueError(f"fused_programs must be >= 1, got {fused_programs}")
    if dc_accum not in DC_ACCUMS:
        raise ValueError(f"dc_accum must be 'float32' or 'bfloat16', got {dc_accum!r}")
    if atomics not in ATOMIC_ORDERINGS:
        raise ValueError(f"atomics must be 'relaxed' or 'acq_rel', got {atomics!r}")

    table = None
    if sampler == "popularity":
        if item_counts is None:
            raise ValueError("sampler='popularity' needs item_counts ([V] counts or a "
                             "PopularityTable)")
        table = _popularity_table(item_counts, num_items)

    if dc_part_items is None:
        per_item = d * (jnp.dtype(embeddings.dtype).itemsize + jnp.dtype(dc_accum).itemsize)
        dc_part_items = max(1024, _L2_BUDGET // per_item)
    if dc_part_items >= num_items:
        dc_part_items = 0
    if impl == "pallas" and sharing == "row" and dc_part_items and not (
            pow2(scatter_rows) and scatter_rows >= 8):
        raise ValueError(f"scatter_rows must be a power of two >= 8, got {scatter_rows}")
    fused = _use_fused(fused, impl, sharing, sampler, row_sampling, dc_part_items, reduction)
    st = Static(int(num_negatives), int(num_items), sampler, sharing, int(block_rows), impl,
                bool(interpret), int(xla_block_rows), int(row_block), int(neg_block), num_warps,
                num_stages, dc_accum, int(dc_part_items), int(scatter_rows), row_sampling,
                int(dc_block), atomics, int(fused_programs or 0))
    w = jnp.ones((n_rows,), bool) if where is None else where.astype(bool)
    # Masked rows may hold any label (padding, -100): clamp so gathers stay in range.
    t = jnp.where(w, targets.astype(jnp.int32), 0)
    # The kernels read the classifier in embeddings.dtype; the cast happens inside the custom
    # VJP, so dC leaves in the classifier's own dtype (float32 parameters get the float32 sum
    # of the dC buffer, not a bf16 rounding of it and a convert back).
    c = classifier
    if fused:
        weights = w.astype(jnp.float32)
        if reduction == "mean":
            weights = weights / jnp.maximum(w.sum(), 1).astype(jnp.float32)
        return _reduced_loss_fn(st)(embeddings, c, t, weights, sampling.seed_to_u32(seed), table)
    loss = _row_loss_fn(st)(embeddings, c, t, w, sampling.seed_to_u32(seed), table)
    return reduce_rows(loss, w, reduction)


def _use_fused(fused, impl, sharing, sampler, row_sampling, dc_part_items, reduction) -> bool:
    """Resolve ``fused`` (None: wherever it applies; True where it does not: a ValueError)."""
    why = None
    if impl != "pallas" or sharing != "row":
        why = "the Pallas kernels with sharing='row'"
    elif sampling.uses_permutation(sampler, sharing, row_sampling) or dc_part_items:
        why = "the atomic row backward (row_sampling='independent', dc_part_items=0)"
    elif reduction == "none":
        why = "reduction='mean' or 'sum' (the gradients are formed for a scalar loss)"
    if fused and why:
        raise ValueError(f"fused=True needs {why}; pass fused=None or False")
    return why is None if fused is None else bool(fused)
