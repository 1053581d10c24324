"""Vocabulary parallelism: CCE and CCE- over a device mesh (``shard_map``), never gathering the
classifier table. ``VocabParallelOptions`` (public) says how the table is sharded; pass it as
``vocab_parallel=`` to ``linear_cross_entropy`` or ``sampled_linear_cross_entropy``, which call
this module. ``shard_map`` (public) is the jax-version shim it uses. Built only on the families'
public functions: ``linear_cross_entropy_fwd`` / ``_bwd`` (CCE) and the per-shard kernels of
``pallas_kernels.cce_neg.shard`` (CCE-).

Layout. ``embeddings [N, D]`` are sharded by rows over ``data_axis`` (replicated over
``vocab_axis``); ``table [R, D]`` is sharded by rows over ``vocab_axis`` (R divisible by its size
K; each shard owns ``R / K`` consecutive rows). Class ``c`` (a label in ``[0, V)``) is table row
``col_start + c``; every other row (a padding row 0, a BERT4Rec mask row, rows padded to make R
divisible) is *excluded*: it takes part in no softmax and gets a zero gradient. This lets a
trainer pass the model's whole item table, whose slice ``[1 : V + 1]`` could not be split evenly.

CCE, per shard k and row i:
  forward:  lse_k = ``linear_cross_entropy_fwd`` over the shard's rows (the Pallas running-max
            kernel, since rows whose target is elsewhere have none here; or the chunked XLA
            path); the exp-terms of the shard's excluded rows (among the first
            ``col_start`` and the last ``R - col_start - V`` table rows: an [N, E] matmul with E
            small) are subtracted; merged over the axis as ``m = pmax(lse_k)``,
            ``lse = m + log(psum(exp(lse_k - m)))`` (N values per shard on the wire); the target
            logit comes from the owning shard (``psum`` of a masked indexed dot).
  backward: ``linear_cross_entropy_bwd`` on the shard with the *global* LSE and the target only
            where the shard owns it (elsewhere -1: no target term): dE_k = sum_j G_ij C_j over
            the shard's rows, dC_k = G_k^T E; dE is ``psum``-ed over ``vocab_axis``, dC over
            ``data_axis`` (rows of other data shards) and stays sharded over ``vocab_axis``.
Excluded-row subtraction is exact in real arithmetic; in float32 it loses precision only when an
excluded row's logit dominates the whole catalog's softmax mass (relative error ~ 1e-7 *
exp(z_excluded) / Z). Padding rows are zeros (logit 0) and row 0 is never trained, so this does
not happen at catalog sizes where vocabulary parallelism is used.

CCE- (row sharing): stratified sampling over the shards. For a sampler ``q`` over the V classes
(uniform, or ``q ∝ item_counts`` from the ``PopularityTable``'s host counts), shard k holds the
share ``pi_k = sum_{j in k} q_j`` and draws ``n_k = max(1, round(n * pi_k))`` ids (0 if
``pi_k == 0``) i.i.d. from ``q`` restricted to its rows; these per-shard tables are built on the
host from the static shapes and cached. Every kept draw (draws equal to the target are dropped)
enters the partition sum with weight ``pi_k / (n_k q_j)`` (logQ correction
``log pi_k - log n_k - log q_j``), so ``exp(z_t) + sum_k sum_draws w exp(z)`` is an unbiased
estimate of the full softmax denominator; loss = log(that) - z_t. For uniform q and equal shards
``corr = log(V / n)``. This differs from the single-device CCE- correction
``log(V - 1) - log(n_eff)`` (which renormalises over the draws that survive the target
exclusion) by O(n / V). Draws are hash functions of ``(seed, shard, global row, slot)``
(``pallas_kernels.cce_neg.sampling``), so forward and backward regenerate them and the result does
not depend on the data sharding. Per shard the negatives run in the Pallas kernels of
``pallas_kernels.cce_neg.shard`` (impl "pallas" / "interpret"; the default on a GPU): the forward
returns the shard's negatives-only LSE (``-inf`` where no draw was kept), the backward takes the
global LSE and accumulates dE and dC (f32 atomics); they draw exactly the ids of the XLA path
(impl "xla": a ``lax.scan`` over 128-row chunks gathering ``[128, n_max, D]``, dC by
scatter-add). The positive logit, its gradient and the cross-shard merge are XLA in both.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, PartitionSpec as P

from pallas_kernels.cce.config import CCEConfig
from pallas_kernels.cce.lse import linear_cross_entropy_bwd, linear_cross_entropy_fwd
from pallas_kernels.cce.reference import matmul_precision, target_logits
from pallas_kernels.cce_neg import sampling, shard

__all__ = [
    "VocabParallelOptions",
    "shard_map",
    "shard_negative_ids",
    "shard_sampler_tables",
    "log_sampling_weight_reference",
]


@dataclasses.dataclass(frozen=True)
class VocabParallelOptions:
    """How the classifier table is sharded for vocabulary parallelism.

    Attributes:
      mesh: a mesh with both axes below (either may have size 1).
      vocab_axis: the axis the table's rows are sharded over (R divisible by its size).
      data_axis: the axis the embedding rows are sharded over (N divisible by its size).
      col_start, num_classes: class c (a label in [0, V)) is table row ``col_start + c``;
        V = ``num_classes`` (None: R - col_start). Every other table row (a padding row 0, a
        mask row, rows padded for even shards) takes no part in any softmax and gets a zero
        gradient.
    """

    mesh: Mesh
    vocab_axis: str = "vocab"
    data_axis: str = "data"
    col_start: int = 0
    num_classes: int | None = None


def shard_map(f, *, mesh, in_specs, out_specs):
    """``jax.shard_map`` (jax >= 0.7) or ``jax.experimental.shard_map.shard_map``, unchecked.

    Replication checks are off: Pallas calls have no replication rule, and every function here
    makes its outputs replicated where ``out_specs`` says so with explicit collectives.
    """
    if hasattr(jax, "shard_map"):
        return jax.shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs,
                             check_vma=False)
    from jax.experimental.shard_map import shard_map as _shard_map  # jax < 0.7

    return _shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_rep=False)


@dataclasses.dataclass(frozen=True)
class _Plan:
    """Static description of one vocabulary-parallel call (hashable: a custom_vjp nondiff arg)."""

    mesh: Mesh
    data_axis: str
    vocab_axis: str
    col_start: int  # table row of class 0
    num_classes: int  # V
    rows_per_shard: int  # R / K
    impl: str  # "pallas" | "interpret" | "xla"
    config: object = None  # CCEConfig (CCE) or SampledConfig (CCE-)
    # CCE- only
    num_negatives: int = 0  # n_max: slots drawn per shard (masked beyond the shard's n_k)
    sampler: str = "uniform"

    @property
    def n_shards(self) -> int:
        return self.mesh.shape[self.vocab_axis]

    def excluded_candidates(self) -> np.ndarray:
        """Local row indices that can be excluded on some shard (static; [E])."""
        r = self.rows_per_shard
        head = range(min(self.col_start, r))
        tail_rows = r * self.n_shards - self.col_start - self.num_classes
        tail = range(max(r - tail_rows, 0), r)
        return np.array(sorted(set(head) | set(tail)), np.int32)


def _axis_size(mesh: Mesh, name: str) -> int:
    if name not in mesh.shape:
        raise ValueError(f"mesh axes are {tuple(mesh.shape)}; axis {name!r} is missing (name the "
                         "axes in VocabParallelOptions(vocab_axis=..., data_axis=...))")
    return mesh.shape[name]


def _check_inputs(embeddings, table, targets, where, options: VocabParallelOptions):
    """(N data shards, K vocabulary shards, V) after one-line checks of the layout."""
    if not isinstance(options.mesh, Mesh):
        raise ValueError(f"VocabParallelOptions.mesh must be a jax.sharding.Mesh, got "
                         f"{type(options.mesh).__name__}")
    if embeddings.ndim != 2 or table.ndim != 2 or embeddings.shape[1] != table.shape[1]:
        raise ValueError(f"embeddings [N, D] and table [R, D] expected, got {embeddings.shape} and "
                         f"{table.shape}")
    n = embeddings.shape[0]
    if targets.shape != (n,) or (where is not None and where.shape != (n,)):
        raise ValueError(f"targets and where must be [N]=[{n}], got {targets.shape} and "
                         f"{None if where is None else where.shape}")
    mesh, data_axis, vocab_axis = options.mesh, options.data_axis, options.vocab_axis
    n_data, n_vocab = _axis_size(mesh, data_axis), _axis_size(mesh, vocab_axis)
    rows = table.shape[0]
    col_start = int(options.col_start)
    num_classes = rows - col_start if options.num_classes is None else int(options.num_classes)
    if n % n_data:
        raise ValueError(f"N={n} rows cannot be split over {n_data} '{data_axis}' shards: use a "
                         f"batch size (x sequence length) divisible by {n_data}")
    if rows % n_vocab:
        raise ValueError(f"table has {rows} rows, not divisible by the {n_vocab} '{vocab_axis}' "
                         "shards: pad the table with rows outside [col_start, col_start + V)")
    if num_classes < 1 or col_start < 0 or col_start + num_classes > rows:
        raise ValueError(f"classes [col_start={col_start}, +V={num_classes}) must lie inside the "
                         f"table's {rows} rows")
    return n_data, n_vocab, num_classes


def _resolve_impl(impl: str, what: str) -> str:
    if impl not in ("auto", "pallas", "interpret", "xla"):
        raise ValueError(f"impl={impl!r}: vocabulary-parallel {what} runs 'auto', 'pallas', "
                         f"'interpret' or 'xla'")
    if impl == "auto":
        return "pallas" if jax.default_backend() == "gpu" else "xla"
    return impl


# ------------------------------------------------------------------------------------------------
# CCE: the single-device forward (with its LSE) and backward (taking one) per shard.


def _ownership(plan: _Plan, targets):
    """(shard-local row of each target or -1, owned bool)."""
    k = lax.axis_index(plan.vocab_axis)
    row = targets + plan.col_start
    local = row - k * plan.rows_per_shard
    owned = (local >= 0) & (local < plan.rows_per_shard)
    return jnp.where(owned, local, -1).astype(jnp.int32), owned


def _excluded(plan: _Plan, e, c):
    """Logits [n, E] of this shard's excluded rows, their mask bool[E] and local indices [E]."""
    cand = plan.excluded_candidates()
    if cand.size == 0:
        return None
    k = lax.axis_index(plan.vocab_axis)
    glob = k * plan.rows_per_shard + jnp.asarray(cand)
    mask = (glob < plan.col_start) | (glob >= plan.col_start + plan.num_classes)
    c_ex = jnp.take(c, jnp.asarray(cand), axis=0)
    x = lax.dot_general(e, c_ex, (((1,), (1,)), ((), ())), precision=matmul_precision(e.dtype),
                        preferred_element_type=jnp.float32)
    return x, mask, jnp.asarray(cand), c_ex


def _merge_lse(plan: _Plan, lse_k, ex=None):
    """Global LSE from per-shard LSEs (pmax + psum of exp-shifted sums), excluded rows removed."""
    m = lax.pmax(lse_k, plan.vocab_axis)
    s = jnp.exp(lse_k - m)
    if ex is not None:
        x, mask, _, _ = ex
        s = s - jnp.sum(jnp.where(mask[None, :], jnp.exp(x - m[:, None]), 0.0), axis=1)
    s = lax.psum(s, plan.vocab_axis)
    return m + jnp.log(jnp.maximum(s, jnp.finfo(jnp.float32).tiny))


def _masked(e, valid):
    return jnp.where(valid[:, None], e, jnp.zeros((), e.dtype))


def _cce_fwd_shard(plan: _Plan, e, table, t, valid):
    c = table.astype(e.dtype)
    e = _masked(e, valid)
    t_local, owned = _ownership(plan, t)
    # The shard's LSE; rows whose target lives on another shard have none here (-1), so the
    # forward keeps a running max instead of shifting by the target logit.
    _, lse_k = linear_cross_entropy_fwd(e, c, t_local, where=valid, impl=plan.impl,
                                        config=plan.config)
    ex = _excluded(plan, e, c)
    lse = _merge_lse(plan, lse_k, ex)
    z_t = target_logits(e, c, jnp.maximum(t_local, 0), valid & owned)
    z_t = lax.psum(z_t, plan.vocab_axis)
    return jnp.where(valid, lse - z_t, 0.0), lse


def _cce_bwd_shard(plan: _Plan, e, table, t, valid, lse, g):
    c = table.astype(e.dtype)
    e = _masked(e, valid)
    g = jnp.where(valid, g.astype(jnp.float32), 0.0)
    t_local, _ = _ownership(plan, t)
    # Global LSE, the target term only where this shard owns the target (t_local = -1 elsewhere).
    de, dc = linear_cross_entropy_bwd(e, c, t_local, lse, g, where=valid, impl=plan.impl,
                                      config=plan.config)
    de = de.astype(jnp.float32)
    dc = dc.astype(jnp.float32)
    ex = _excluded(plan, e, c)
    if ex is not None:  # remove the excluded rows' softmax terms from dE, zero their dC rows
        x, mask, cand, c_ex = ex
        p = jnp.where(mask[None, :], jnp.exp(x - lse[:, None]) * g[:, None], 0.0)
        de = de - p @ c_ex.astype(jnp.float32)
        dc = dc.at[cand].multiply(jnp.where(mask, 0.0, 1.0)[:, None])
    de = lax.psum(de, plan.vocab_axis)
    dc = lax.psum(dc, plan.data_axis)
    return de.astype(e.dtype), dc.astype(table.dtype)


def _specs(plan: _Plan):
    rows = P(plan.data_axis)
    return rows, P(plan.data_axis, None), P(plan.vocab_axis, None)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _cce_rows(plan, e, table, t, valid):
    return _cce_fwd(plan, e, table, t, valid)[0]


def _cce_fwd(plan, e, table, t, valid):
    rows, mat, tab = _specs(plan)
    fn = shard_map(functools.partial(_cce_fwd_shard, plan), mesh=plan.mesh,
                   in_specs=(mat, tab, rows, rows), out_specs=(rows, rows))
    loss, lse = fn(e, table, t, valid)
    return loss, (e, table, t, valid, lse)


def _cce_bwd(plan, res, g):
    e, table, t, valid, lse = res
    rows, mat, tab = _specs(plan)
    fn = shard_map(functools.partial(_cce_bwd_shard, plan), mesh=plan.mesh,
                   in_specs=(mat, tab, rows, rows, rows, rows), out_specs=(mat, tab))
    de, dc = fn(e, table, t, valid, lse, g)
    return de, dc, None, None


_cce_rows.defvjp(_cce_fwd, _cce_bwd)


def vocab_parallel_cross_entropy(embeddings, table, targets, *, where, impl: str,
                                 config: CCEConfig | None, options: VocabParallelOptions):
    """(float32[N] per-row losses, valid bool[N]) of the exact softmax CE of
    ``embeddings @ table[col_start : col_start + V].T`` with the table sharded (module
    docstring). ``pallas_kernels.linear_cross_entropy(..., vocab_parallel=options)`` calls it."""
    _, n_vocab, num_classes = _check_inputs(embeddings, table, targets, where, options)
    impl = _resolve_impl(impl, "CCE")
    valid = jnp.ones(targets.shape, bool) if where is None else where.astype(bool)
    t = jnp.where(valid, targets, 0).astype(jnp.int32)
    plan = _Plan(options.mesh, options.data_axis, options.vocab_axis, int(options.col_start),
                 num_classes, table.shape[0] // n_vocab, impl, config)
    return _cce_rows(plan, embeddings, table, t, valid), valid


# ------------------------------------------------------------------------------------------------
# CCE- (stratified per-shard negatives).

_SHARD_SALT = 0x85EBCA6B


def shard_sampler_tables(num_rows: int, n_shards: int, num_negatives: int, *, col_start: int = 0,
                         num_classes: int | None = None, item_counts=None):
    """Host-side per-shard sampler state of the vocabulary-parallel CCE- (built inside the loss
    from the static shapes and the ``PopularityTable``'s counts; public for tests and docs).

    Returns a dict of numpy arrays: ``n_draws int32[K]`` (n_k), ``log_w float32[K]``
    (log pi_k - log n_k), and for popularity sampling ``prob float32[R]``, ``alias int32[R]``
    (per-shard alias tables over local rows) and ``log_q float32[R]`` (-inf on excluded rows).
    ``item_counts``: None (uniform) or counts over the V classes (labels 0..V-1).
    """
    num_classes = num_rows - col_start if num_classes is None else int(num_classes)
    if num_rows % n_shards:
        raise ValueError(f"{num_rows} table rows are not divisible by {n_shards} shards")
    r = num_rows // n_shards
    q = np.zeros(num_rows, np.float64)
    if item_counts is None:
        q[col_start:col_start + num_classes] = 1.0 / num_classes
    else:
        counts = sampling.check_counts(item_counts)
        if counts.shape != (num_classes,):
            raise ValueError(f"item_counts has {counts.shape[0]} entries, expected V={num_classes} "
                             "(counts over labels 0..V-1)")
        q[col_start:col_start + num_classes] = counts / counts.sum()
    pi = q.reshape(n_shards, r).sum(axis=1)
    n_draws = np.where(pi > 0, np.maximum(1, np.rint(num_negatives * pi)), 0).astype(np.int32)
    with np.errstate(divide="ignore"):
        log_w = np.where(n_draws > 0, np.log(pi) - np.log(np.maximum(n_draws, 1)), 0.0)
        log_q = np.log(q)
    out = {"n_draws": n_draws, "log_w": log_w.astype(np.float32),
           "log_q": log_q.astype(np.float32)}
    if item_counts is not None:
        prob = np.zeros(num_rows, np.float32)
        alias = np.zeros(num_rows, np.int32)
        for k in range(n_shards):
            qk = q[k * r:(k + 1) * r]
            if qk.sum() > 0:
                prob[k * r:(k + 1) * r], alias[k * r:(k + 1) * r] = sampling.build_alias_table(qk)
        out.update(prob=prob, alias=alias)
    return out


class _Counts:
    """Item counts as a cache key: equal when their bytes are (compared by digest)."""

    __slots__ = ("counts", "digest")

    def __init__(self, counts: np.ndarray):
        self.counts = counts
        self.digest = hashlib.sha1(np.ascontiguousarray(counts)).hexdigest()

    def __hash__(self) -> int:
        return hash(self.digest)

    def __eq__(self, other) -> bool:
        return isinstance(other, _Counts) and other.digest == self.digest


@functools.lru_cache(maxsize=16)
def _cached_tables(rows: int, n_shards: int, num_negatives: int, col_start: int,
                   num_classes: int, counts: _Counts | None) -> dict:
    return shard_sampler_tables(rows, n_shards, num_negatives, col_start=col_start,
                                num_classes=num_classes,
                                item_counts=None if counts is None else counts.counts)


def _sampler_tables(rows: int, n_shards: int, num_negatives: int, col_start: int,
                    num_classes: int, sampler: sampling.PopularityTable | None):
    """``shard_sampler_tables`` for this call, cached per (shapes, counts digest)."""
    counts = None
    if sampler is not None:
        counts = sampler.host_counts()
        if counts is None:
            raise ValueError("vocabulary-parallel popularity sampling needs the item counts on "
                             "the host: build the table with pallas_kernels.popularity_table("
                             "item_counts)")
    return _cached_tables(rows, n_shards, num_negatives, col_start, num_classes,
                          None if counts is None else _Counts(counts))


def _table_state(st: dict, rows: int):
    """Device arrays (n_draws, log_w, log_q, prob, alias) of ``shard_sampler_tables``."""
    popularity = "prob" in st
    return (jnp.asarray(st["n_draws"]), jnp.asarray(st["log_w"]), jnp.asarray(st["log_q"]),
            jnp.asarray(st["prob"]) if popularity else jnp.zeros((rows,), jnp.float32),
            jnp.asarray(st["alias"]) if popularity else jnp.zeros((rows,), jnp.int32))


def _shard_seed(plan: _Plan, seed_u32):
    k = lax.axis_index(plan.vocab_axis)
    return sampling.mix32(seed_u32 ^ (k.astype(jnp.uint32) * jnp.uint32(_SHARD_SALT)))


def _valid_range(plan: _Plan):
    """This shard's valid local rows [lo, hi) (its share of the V classes)."""
    k = lax.axis_index(plan.vocab_axis)
    r = plan.rows_per_shard
    lo = jnp.clip(plan.col_start - k * r, 0, r)
    hi = jnp.clip(plan.col_start + plan.num_classes - k * r, 0, r)
    return lo, hi


def _draws(plan: _Plan, seed_u32, rows_global, table_state):
    """Local ids int32[n, n_max] and slot-active mask bool[n, n_max] of this shard's draws."""
    seed = _shard_seed(plan, seed_u32)
    n_k, _, log_q, prob, alias = table_state
    r = plan.rows_per_shard
    if plan.sampler == "uniform":
        lo, hi = _valid_range(plan)
        keys = sampling.stream_keys(seed, rows_global, "row")[:, None]
        h = sampling.draw_hash(keys, sampling.slot_keys(
            jnp.arange(plan.num_negatives, dtype=jnp.uint32))[None, :])
        span = jnp.maximum(hi - lo, 1).astype(jnp.uint32)
        ids = lo + sampling.mulhi32(h, span).astype(jnp.int32)
    else:
        table = sampling.PopularityTable(prob, alias, log_q)
        ids = sampling.ids_for_streams(seed, rows_global, plan.num_negatives, r, "popularity",
                                       "row", table)
    active = jnp.arange(plan.num_negatives)[None, :] < n_k[0]
    return ids, jnp.broadcast_to(active, ids.shape)


def _neg_logits(plan: _Plan, e, c, t_local, ids, active, table_state):
    """Corrected negative logits float32[n, n_max] (-inf where not used) and gathered rows."""
    _, log_w, log_q, _, _ = table_state
    cg = jnp.take(c, ids, axis=0)  # [n, n_max, D]
    s = jnp.einsum("rd,rkd->rk", e, cg, preferred_element_type=jnp.float32)
    keep = active & (ids != t_local[:, None])
    corr = log_w[0] - log_q[ids]
    return jnp.where(keep, s + corr, -jnp.inf), cg


def _kernel_inputs(plan: _Plan, seed_u32, rows_global, table_state):
    """Inputs of the per-shard Pallas kernels that reproduce ``_draws``: (stream keys
    uint32[n], ints int32[4] = [lo, span, n_k, 0], corr f32[1], popularity tables)."""
    n_k, log_w, log_q, prob, alias = table_state
    lo, hi = _valid_range(plan)
    ints = jnp.stack([lo, jnp.maximum(hi - lo, 1), n_k[0], jnp.zeros_like(lo)]).astype(jnp.int32)
    if plan.sampler == "uniform":  # log_q is one value over the valid rows: fold it in here
        corr, tables = log_w[0] - log_q[jnp.minimum(lo, plan.rows_per_shard - 1)], None
    else:
        corr, tables = log_w[0], (prob, alias, log_q)
    keys = sampling.stream_keys(_shard_seed(plan, seed_u32), rows_global.astype(jnp.uint32), "row")
    return keys, ints, corr.reshape(1).astype(jnp.float32), tables


def _shard_options(plan: _Plan):
    cfg = plan.config
    return dict(rows_per_shard=plan.rows_per_shard, interpret=plan.impl == "interpret",
                row_block=None if cfg is None else cfg.row_block,
                num_warps=None if cfg is None else cfg.num_warps)


def _chunks(n: int, block: int = 128):
    bt = min(block, n)
    while n % bt:
        bt -= 1
    return bt, n // bt


def _cce_neg_fwd_shard(plan: _Plan, e, table, t, valid, seed_u32, *table_state):
    c = table.astype(e.dtype)
    n = e.shape[0]
    rows_global = lax.axis_index(plan.data_axis) * n + jnp.arange(n)
    t_local, owned = _ownership(plan, t)
    z_t = target_logits(e, c, jnp.maximum(t_local, 0), valid & owned)
    z_t = lax.psum(z_t, plan.vocab_axis)
    if plan.impl != "xla":
        keys, ints, corr, tables = _kernel_inputs(plan, seed_u32, rows_global, table_state)
        lse_k = shard.shard_negatives_lse(keys, e, t_local, ints, corr, c, tables,
                                          **_shard_options(plan))
    else:
        bt, nc = _chunks(n)

        def body(_, xs):
            ec, tc, rc = xs
            ids, active = _draws(plan, seed_u32, rc.astype(jnp.uint32), table_state)
            s, _ = _neg_logits(plan, ec, c, tc, ids, active, table_state)
            return None, jax.nn.logsumexp(s, axis=1)

        _, lse_k = lax.scan(body, None, (e.reshape(nc, bt, -1), t_local.reshape(nc, bt),
                                         rows_global.reshape(nc, bt)))
        lse_k = lse_k.reshape(n)
    # Merge negatives over shards, then add the positive: lse = logaddexp(z_t, LSE_k lse_k).
    m = jnp.maximum(lax.pmax(lse_k, plan.vocab_axis), z_t)
    s = lax.psum(jnp.exp(lse_k - m), plan.vocab_axis) + jnp.exp(z_t - m)
    lse = m + jnp.log(s)
    return jnp.where(valid, lse - z_t, 0.0), lse


def _cce_neg_bwd_shard(plan: _Plan, e, table, t, valid, seed_u32, lse, g, *table_state):
    c = table.astype(e.dtype)
    n, d = e.shape
    rows_global = lax.axis_index(plan.data_axis) * n + jnp.arange(n)
    g = jnp.where(valid, g.astype(jnp.float32), 0.0)
    t_local, owned = _ownership(plan, t)
    t_safe = jnp.maximum(t_local, 0)
    # Positive term on the owning shard: d loss / d z_t = p_t - 1.
    z_t = target_logits(e, c, t_safe, valid & owned)
    z_t = lax.psum(z_t, plan.vocab_axis)
    g_pos = jnp.where(owned, (jnp.exp(z_t - lse) - 1.0) * g, 0.0)
    ef = e.astype(jnp.float32)
    c_t = jnp.take(c, t_safe, axis=0).astype(jnp.float32)
    de0 = g_pos[:, None] * c_t
    dc = jnp.zeros(c.shape, jnp.float32).at[t_safe].add(g_pos[:, None] * ef)
    if plan.impl != "xla":
        keys, ints, corr, tables = _kernel_inputs(plan, seed_u32, rows_global, table_state)
        de, dc = shard.shard_negatives_grads(keys, e, t_local, g, lse, ints, corr, c, tables,
                                             dc_init=dc, **_shard_options(plan))
        de = lax.psum(de + de0, plan.vocab_axis)
        dc = lax.psum(dc, plan.data_axis)
        return de.astype(e.dtype), dc.astype(table.dtype)
    bt, nc = _chunks(n)

    def body(dc, xs):
        ec, tc, rc, lc, gc = xs
        ids, active = _draws(plan, seed_u32, rc.astype(jnp.uint32), table_state)
        s, cg = _neg_logits(plan, ec, c, tc, ids, active, table_state)
        p = jnp.exp(s - lc[:, None]) * gc[:, None]  # 0 where s == -inf
        de = jnp.einsum("rk,rkd->rd", p, cg.astype(jnp.float32))
        dc = dc.at[ids.reshape(-1)].add(
            (p[:, :, None] * ec.astype(jnp.float32)[:, None, :]).reshape(-1, d))
        return dc, de

    dc, de = lax.scan(body, dc, (e.reshape(nc, bt, d), t_local.reshape(nc, bt),
                                 rows_global.reshape(nc, bt), lse.reshape(nc, bt),
                                 g.reshape(nc, bt)))
    de = lax.psum(de.reshape(n, d) + de0, plan.vocab_axis)
    dc = lax.psum(dc, plan.data_axis)
    return de.astype(e.dtype), dc.astype(table.dtype)


def _neg_specs(plan: _Plan):
    rows, mat, tab = _specs(plan)
    v = P(plan.vocab_axis)
    return rows, mat, tab, (v, v, v, v, v)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _cce_neg_rows(plan, e, table, t, valid, seed_u32, table_state):
    return _cce_neg_fwd(plan, e, table, t, valid, seed_u32, table_state)[0]


def _cce_neg_fwd(plan, e, table, t, valid, seed_u32, table_state):
    rows, mat, tab, st = _neg_specs(plan)
    fn = shard_map(functools.partial(_cce_neg_fwd_shard, plan), mesh=plan.mesh,
                   in_specs=(mat, tab, rows, rows, P()) + st, out_specs=(rows, rows))
    loss, lse = fn(e, table, t, valid, seed_u32, *table_state)
    return loss, (e, table, t, valid, seed_u32, table_state, lse)


def _cce_neg_bwd(plan, res, g):
    e, table, t, valid, seed_u32, table_state, lse = res
    rows, mat, tab, st = _neg_specs(plan)
    fn = shard_map(functools.partial(_cce_neg_bwd_shard, plan), mesh=plan.mesh,
                   in_specs=(mat, tab, rows, rows, P(), rows, rows) + st, out_specs=(mat, tab))
    de, dc = fn(e, table, t, valid, seed_u32, lse, g, *table_state)
    return de, dc, None, None, None, None


_cce_neg_rows.defvjp(_cce_neg_fwd, _cce_neg_bwd)


def vocab_parallel_sampled_cross_entropy(embeddings, table, targets, *, num_negatives: int, seed,
                                         sampler, where, impl: str, config,
                                         options: VocabParallelOptions):
    """(float32[N] per-row losses, valid bool[N]) of CCE- with the table sharded (estimator in
    the module docstring; row sharing). ``pallas_kernels.sampled_linear_cross_entropy(...,
    vocab_parallel=options)`` calls it; ``config`` is its ``SampledConfig`` (row tile, warps)."""
    _, n_vocab, num_classes = _check_inputs(embeddings, table, targets, where, options)
    if not isinstance(num_negatives, (int, np.integer)) or num_negatives < 1:
        raise ValueError(f"num_negatives must be a positive int, got {num_negatives!r}")
    impl = _resolve_impl(impl, "CCE-")
    if impl != "xla":
        shard.check_shapes(embeddings.shape[1], None if config is None else config.row_block)
    rows = table.shape[0]
    st = _sampler_tables(rows, n_vocab, int(num_negatives), int(options.col_start), num_classes,
                         sampler)
    valid = jnp.ones(targets.shape, bool) if where is None else where.astype(bool)
    t = jnp.where(valid, targets, 0).astype(jnp.int32)
    plan = _Plan(options.mesh, options.data_axis, options.vocab_axis, int(options.col_start),
                 num_classes, rows // n_vocab, impl, config,
                 num_negatives=int(np.max(st["n_draws"])),
                 sampler="uniform" if sampler is None else "popularity")
    seed_u32 = sampling.seed_to_u32(seed)
    return _cce_neg_rows(plan, embeddings, table, t, valid, seed_u32, _table_state(st, rows)), valid


def log_sampling_weight_reference(sampler_tables, num_rows: int, n_shards: int):
    """float64 [R] per-row logQ correction ``log pi_k - log n_k - log q_j`` (tests, docs)."""
    r = num_rows // n_shards
    shard_of_row = np.arange(num_rows) // r
    return (np.asarray(sampler_tables["log_w"], np.float64)[shard_of_row]
            - np.asarray(sampler_tables["log_q"], np.float64))


def shard_negative_ids(n_rows: int, table_rows: int, *, options: VocabParallelOptions,
                       num_negatives: int, seed, sampler=None):
    """The draws of the vocabulary-parallel CCE- (tests and references).

    Returns ``(ids int32[K, N, n_max], active bool[K, N, n_max])``: global table rows drawn by
    shard k for row i, and which slots are used (``s < n_k``). Draws equal to a row's target are
    included here; the loss drops them. ``sampler``: None (uniform) or a ``PopularityTable``.
    """
    mesh, data_axis, vocab_axis = options.mesh, options.data_axis, options.vocab_axis
    col_start = int(options.col_start)
    num_classes = (table_rows - col_start if options.num_classes is None
                   else int(options.num_classes))
    n_vocab = mesh.shape[vocab_axis]
    st = _sampler_tables(table_rows, n_vocab, int(num_negatives), col_start, num_classes, sampler)
    plan = _Plan(mesh, data_axis, vocab_axis, col_start, num_classes, table_rows // n_vocab,
                 "xla", num_negatives=int(np.max(st["n_draws"])),
                 sampler="uniform" if sampler is None else "popularity")

    def body(seed_u32, *ts):
        n = n_rows // mesh.shape[data_axis]
        rows_global = lax.axis_index(data_axis) * n + jnp.arange(n)
        ids, active = _draws(plan, seed_u32, rows_global.astype(jnp.uint32), ts)
        ids = ids + lax.axis_index(vocab_axis) * plan.rows_per_shard
        return ids[None], active[None]

    v = P(vocab_axis)
    out = P(vocab_axis, data_axis, None)
    fn = shard_map(body, mesh=mesh, in_specs=(P(), v, v, v, v, v), out_specs=(out, out))
    return jax.jit(fn)(sampling.seed_to_u32(seed), *_table_state(st, table_rows))
