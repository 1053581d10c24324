"""The Pallas CCE kernels behind one ``jax.custom_vjp``, and the forward / backward pair alone.

* ``row_losses``: differentiable float32[N] losses. Its forward, when differentiated, runs the
  one-pass kernel that also accumulates sum_v softmax_rv c_v (``forward.py``, ``with_acc``), so
  the backward runs the dC kernel only; undifferentiated it runs the plain forward (Mosaic GPU
  or Triton).
* ``forward_with_lse`` / ``backward_from_lse``: the plain forward returning the log-sum-exp,
  and the backward (dE and dC kernels) taking one, e.g. a global log-sum-exp merged over
  vocabulary shards.

Inputs are padded here so the kernels see power-of-two tiles: rows to a whole number of row
tiles (O(N D)), and D to a power of two >= 16 only when it is not one already (then the
classifier is copied once; D in {64, 128, 256} never is). The catalog is never padded: the
kernels mask the ragged last catalog tile. Catalogs past the kernels' 32-bit element offsets
(V x D >= 2^31, e.g. 10M items at D = 256) run as several launches whose log-sum-exps are
merged.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax

from pallas_kernels.cce import backward, common, config, forward, forward_mosaic, reference

_MIN_DOT = 16  # Triton's smallest dot tile
# Element offsets inside the kernels are 32-bit (cf. apple/ml-cross-entropy#37): a catalog whose
# padded table has 2^31 elements or more is cut into chunks below that, one launch each.
MAX_ELEMENTS = 2**31 - 1


def resolve_plan(n: int, v: int, d: int, itemsize: int,
                 cfg: config.CCEConfig | None) -> common.KernelPlan:
    """Defaults for (n, v, d, dtype size), the user's settings, then tiles clamped to the
    problem."""
    plan = config.resolve(cfg, n, v, d, itemsize)
    cap_n = max(_MIN_DOT, common.next_pow2(n))
    cap_v = max(_MIN_DOT, common.next_pow2(v))
    clamp = lambda size, cap: max(_MIN_DOT, min(size, cap))  # noqa: E731
    return dataclasses.replace(
        plan,
        fwd_block_n=clamp(plan.fwd_block_n, cap_n), bwd_block_n=clamp(plan.bwd_block_n, cap_n),
        fwd_block_v=clamp(plan.fwd_block_v, cap_v), bwd_block_v=clamp(plan.bwd_block_v, cap_v),
        fde_block_n=clamp(plan.fde_block_n, cap_n), fde_block_v=clamp(plan.fde_block_v, cap_v))


def catalog_chunks(v: int, d: int, max_rows: int | None = None) -> tuple[tuple[int, int], ...]:
    """[lo, hi) row ranges of the classifier, each addressable with 32-bit element offsets."""
    d_pad = max(_MIN_DOT, common.next_pow2(d))
    rows = MAX_ELEMENTS // d_pad if max_rows is None else min(max_rows, MAX_ELEMENTS // d_pad)
    k = -(-v // rows)
    size = -(-v // k)  # balanced chunks
    return tuple((lo, min(v, lo + size)) for lo in range(0, v, size))


def plan_chunks(embeddings, v: int, cfg: config.CCEConfig | None):
    """((lo, hi, plan), ...): the catalog chunks of one call, each with its resolved plan."""
    n, d = embeddings.shape
    d_pad = max(_MIN_DOT, common.next_pow2(d))
    if n * d_pad >= 2**31:
        raise ValueError(f"embeddings have {n} x {d_pad} >= 2^31 elements, past the kernels' "
                         f"32-bit offsets; split the batch (or use impl='xla')")
    max_rows = None if cfg is None else cfg.max_chunk_rows
    return tuple((lo, hi, resolve_plan(n, hi - lo, d, embeddings.dtype.itemsize, cfg))
                 for lo, hi in catalog_chunks(v, d, max_rows))


def _padded(embeddings, classifier, plan):
    n, d = embeddings.shape
    d_pad = max(_MIN_DOT, common.next_pow2(d))
    row_tile = max(plan.fwd_block_n, plan.bwd_block_n, plan.fde_block_n)
    n_pad = -(-n // row_tile) * row_tile
    e_pad = jnp.pad(embeddings, ((0, n_pad - n), (0, d_pad - d)))
    c_pad = classifier if d_pad == d else jnp.pad(classifier, ((0, 0), (0, d_pad - d)))
    return e_pad, c_pad


def _pad_vec(x, n_pad, value):
    return jnp.pad(x, (0, n_pad - x.shape[0]), constant_values=value)


def _lse_one(embeddings, classifier, plan, interpret, shift=None, with_acc=False):
    """One catalog chunk's LSE [N] (``with_acc``: and its float32 acc [N, D], forward.py)."""
    n, d = embeddings.shape
    if shift is not None and not with_acc and _use_mosaic(plan, embeddings, classifier.shape[0]):
        return _lse_mosaic(embeddings, classifier, shift, plan, interpret)
    e_pad, c_pad = _padded(embeddings, classifier, plan)
    if shift is not None:
        shift = _pad_vec(shift, e_pad.shape[0], 0.0)
    out = forward.lse_rows(e_pad, c_pad, classifier.shape[0], plan, interpret=interpret,
                           shift=shift, with_acc=with_acc)
    return (out[0][:n], out[1][:n, :d]) if with_acc else out[:n]


def _use_mosaic(plan, embeddings, classifier_rows: int) -> bool:
    return plan.fwd_impl == "mosaic" and forward_mosaic.supported(
        classifier_rows, embeddings.shape[1], embeddings.dtype)


def _lse_mosaic(embeddings, classifier, shift, plan, interpret):
    """The target-shifted LSE [N] by the Mosaic GPU kernel (rows padded to its CTA)."""
    n = embeddings.shape[0]
    cta_rows = plan.mosaic_compute_wgs * plan.mosaic_block_n
    n_pad = -(-n // cta_rows) * cta_rows
    e_pad = jnp.pad(embeddings, ((0, n_pad - n), (0, 0)))
    lse = forward_mosaic.lse_rows(
        e_pad, classifier, _pad_vec(shift, n_pad, 0.0),
        block_n=plan.mosaic_block_n, block_v=plan.mosaic_block_v, slots=plan.mosaic_slots,
        lhs_regs=plan.mosaic_lhs_regs, pingpong=plan.mosaic_pingpong,
        compute_wgs=plan.mosaic_compute_wgs, interpret=interpret)
    return lse[:n]


def _merge_lse(parts):
    """LSE over catalog chunks from their per-chunk LSEs (a [chunks, N] logsumexp)."""
    return parts[0] if len(parts) == 1 else jax.nn.logsumexp(jnp.stack(parts), axis=0)


def _lse(embeddings, classifier, chunks, interpret, shift=None):
    # One kernel launch per catalog chunk, merged in float32 (a [chunks, N] logsumexp).
    return _merge_lse([_lse_one(embeddings, classifier[lo:hi], plan, interpret, shift)
                       for lo, hi, plan in chunks])


def _lse_by_target(embeddings, classifier, z_t, chunks, interpret):
    """LSE with each row's exponentials shifted by its target logit: z_t <= the row max, so no
    running max is needed; if any row overflows (a logit ~70 above its target's) the whole batch
    is redone with the running max, so the result stays exact."""
    lse = _lse(embeddings, classifier, chunks, interpret, shift=z_t)
    return lax.cond(jnp.all(jnp.isfinite(lse)), lambda: lse,
                    lambda: _lse(embeddings, classifier, chunks, interpret))


def _lse_and_mean_by_target(embeddings, classifier, z_t, chunks, interpret):
    """(lse, a): ``_lse_by_target`` plus a_r = sum_v softmax_rv c_v (float32 [N, D]).

    Every catalog chunk and split is shifted by the same z_t, so their sums and accs add. If a
    row's sum (or acc) overflows, lse is redone with the running max and a by the dE kernel."""
    n, d = embeddings.shape
    lses, accs = zip(*(_lse_one(embeddings, classifier[lo:hi], plan, interpret, z_t,
                                with_acc=True) for lo, hi, plan in chunks))
    lse = _merge_lse(lses)
    a = sum(accs[1:], accs[0]) * jnp.exp(z_t - lse)[:, None]  # / (the row's sum rel. to z_t)

    def redo():
        lse_o = _lse(embeddings, classifier, chunks, interpret)
        a_o = 0.0
        for lo, hi, plan in chunks:
            e_pad, c_pad = _padded(embeddings, classifier[lo:hi], plan)
            lse2 = _pad_vec(lse_o * common.LOG2E, e_pad.shape[0], 0.0)
            a_o = a_o + backward.softmax_mean(e_pad, c_pad, hi - lo, lse2, plan,
                                              interpret=interpret)[:n, :d]
        return lse_o, a_o

    ok = jnp.all(jnp.isfinite(lse)) & jnp.all(jnp.isfinite(a))
    return lax.cond(ok, lambda: (lse, a), redo)


def _fwd_plain(embeddings, classifier, targets, valid, chunks, interpret):
    z_t = reference.target_logits(embeddings, classifier, targets, valid)
    lse = _lse_by_target(embeddings, classifier, z_t, chunks, interpret)
    return jnp.where(valid, lse - z_t, 0.0), lse


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _row_losses(embeddings, classifier, targets, valid, chunks, interpret):
    # Not differentiated: the plain forward (no dE accumulation).
    return _fwd_plain(embeddings, classifier, targets, valid, chunks, interpret)[0]


def _fwd(embeddings, classifier, targets, valid, chunks, interpret):
    """Forward of a differentiated call: also the softmax-weighted classifier rows
    a_r = sum_v softmax_rv c_v (float32 [N, D]), the backward's dE up to the target term."""
    z_t = reference.target_logits(embeddings, classifier, targets, valid)
    lse, a = _lse_and_mean_by_target(embeddings, classifier, z_t, chunks, interpret)
    loss = jnp.where(valid, lse - z_t, 0.0)
    return loss, (embeddings, classifier, targets, valid, lse, a)


def _bwd(chunks, interpret, res, g_n):
    embeddings, classifier, targets, valid, lse, a = res
    de, dc = _grads(chunks, interpret, embeddings, classifier, targets, valid, lse, g_n, a)
    return de, dc, None, None


_row_losses.defvjp(_fwd, _bwd)


def target_term_into_dc(dc, e, t, w):
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
    # one shared segment, their float32 adds all hit one [D] row: 1.2 s per catalog chunk at
    # N = 131072 when half the rows had their target in another chunk.)
    seg = jnp.where(key < v, seg, n)
    sums = jax.ops.segment_sum(contrib, seg, num_segments=n, indices_are_sorted=True)
    # Target item of each segment; unused segment ids get distinct rows >= v, which the scatter
    # drops, so the rows are unique and increasing.
    rows = (v + jnp.arange(n, dtype=jnp.int32)).at[seg].set(key, mode="drop")
    flags = dict(indices_are_sorted=True, unique_indices=True)
    cur = dc.at[rows].get(mode="fill", fill_value=0, **flags).astype(jnp.float32)
    return dc.at[rows].set((cur + sums).astype(dc.dtype), mode="drop", **flags)


def _grads(chunks, interpret, embeddings, classifier, targets, valid, lse, g_n, a=None):
    """(dE, dC) of sum_r g_r loss_r given the LSE. ``a`` (sum_v softmax_rv c_v from the
    one-pass forward): dE's softmax term is known and only the dC kernel runs."""
    n, d = embeddings.shape
    v = classifier.shape[0]
    g_valid = jnp.where(valid, g_n.astype(jnp.float32), 0.0)
    t_valid = jnp.where(valid & (targets >= 0) & (targets < v), targets, -1).astype(jnp.int32)
    de_total, dcs = None, []
    for lo, hi, plan in chunks:
        c = classifier[lo:hi]
        e_pad, c_pad = _padded(embeddings, c, plan)
        n_pad = e_pad.shape[0]
        # Targets outside this chunk never match one of its columns.
        t_chunk = jnp.where((t_valid >= lo) & (t_valid < hi), t_valid - lo, -1)
        de, dc = backward.grads(e_pad, c_pad, hi - lo, _pad_vec(lse * common.LOG2E, n_pad, 0.0),
                                _pad_vec(t_chunk, n_pad, -1), _pad_vec(g_valid, n_pad, 0.0),
                                plan, interpret=interpret, de_dtype=jnp.float32,
                                want_de=a is None)
        if a is None:
            de = de[:n, :d]
            de_total = de if de_total is None else de_total + de
        dcs.append(target_term_into_dc(dc[:, :d], embeddings, t_chunk, g_valid))
    if a is not None:
        de_total = g_valid[:, None] * a
    # dE_r -= g_r c_{t_r} (rows with t = -1, e.g. a vocabulary shard's foreign targets: 0)
    c_t = jnp.take(classifier, jnp.maximum(t_valid, 0), axis=0).astype(jnp.float32)
    de_total = de_total - jnp.where(t_valid >= 0, g_valid, 0.0)[:, None] * c_t
    dc = dcs[0] if len(dcs) == 1 else jnp.concatenate(dcs, axis=0)
    return de_total.astype(embeddings.dtype), dc.astype(classifier.dtype)


def row_losses(embeddings, classifier, targets, valid, *, interpret: bool,
               cfg: config.CCEConfig | None):
    """float32[N] per-row CCE losses (0 where ``valid`` is False), differentiable."""
    chunks = plan_chunks(embeddings, classifier.shape[0], cfg)
    return _row_losses(embeddings, classifier, targets, valid, chunks, interpret)


def forward_with_lse(embeddings, classifier, targets, valid, *, interpret: bool,
                     cfg: config.CCEConfig | None):
    """(row losses float32[N], lse float32[N]) by the plain forward kernels (not differentiable:
    pair it with ``backward_from_lse``). A valid row whose target lies outside [0, V) has no
    target (its loss is its lse); a batch with such rows takes the running-max kernel, since
    the target-shifted one needs every row's target logit (a vocabulary shard's rows mostly
    have their target on another shard)."""
    chunks = plan_chunks(embeddings, classifier.shape[0], cfg)
    v = classifier.shape[0]
    has_target = (targets >= 0) & (targets < v)
    t_safe = jnp.where(has_target, targets, 0)
    z_t = reference.target_logits(embeddings, classifier, t_safe, valid & has_target)
    lse = lax.cond(jnp.all(has_target | ~valid),
                   lambda: _lse_by_target(embeddings, classifier, z_t, chunks, interpret),
                   lambda: _lse(embeddings, classifier, chunks, interpret))
    return jnp.where(valid, lse - z_t, 0.0), lse


def backward_from_lse(embeddings, classifier, targets, valid, lse, g, *, interpret: bool,
             cfg: config.CCEConfig | None):
    """(dE, dC) of sum_r g_r loss_r given the rows' log-sum-exp; a valid row whose target is
    outside [0, V) gets no target term."""
    chunks = plan_chunks(embeddings, classifier.shape[0], cfg)
    return _grads(chunks, interpret, embeddings, classifier, targets, valid, lse, g)
