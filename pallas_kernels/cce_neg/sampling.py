"""Counter-based negative sampling that runs identically in plain JAX and inside Pallas kernels.

Every negative id is a pure function of ``(seed, stream, j)``: ``stream`` is the row index
(``sharing="row"``) or the row-block index (``"block"``), and ``j`` is the sample
slot in ``[0, n)``. The forward and backward kernels therefore regenerate the same ids and no
``[N, n]`` index tensor is ever stored. Only uint32 arithmetic (wrapping multiply, xor, logical
shift) is used, so the same functions trace inside Triton-lowered Pallas kernels.

Hash: ``mix32`` is the "lowbias32" integer finaliser (two multiply/xorshift rounds, a bijection of
uint32 with full avalanche). A draw is
``h = mix32(mix32(mix32(seed ^ tag) ^ stream) ^ mix32(j * 0x9E3779B9 + 0x632BE5AB))``; the
per-stream key is computed once per row (or tile), the per-slot term once per ``j``.

Uniform ids: multiply-shift ``id = (h * V) >> 32`` (the high word of the 64-bit product, computed
from 16-bit halves). Each id receives ``floor(2^32 / V)`` or that plus one of the 2^32 hash
values, so the relative bias is at most ``V / 2^32`` (2.3e-4 at V = 10^6), far below what the
estimator can notice; no rejection loop (which kernels could not run in lockstep) is needed.

Popularity ids (``q_j = count_j / sum(count)``): Walker/Vose alias table. Column ``k`` is the
uniform id above; a second hash ``mix32(h ^ 0x5BD1E995)`` gives a 24-bit coin ``u`` in [0, 1); the
draw is ``k`` if ``u < prob[k]`` else ``alias[k]``. Probabilities are thus quantised to 2^-24.
"""

from __future__ import annotations

import functools
import hashlib
import math

import jax
import jax.numpy as jnp
import numpy as np

SHARINGS = ("row", "block")

_U32 = jnp.uint32
# Domain-separation tags: the same seed gives unrelated ids in the two sharing modes.
_SHARING_TAG = {"row": 0x243F6A88, "block": 0x6A09E667}
_SLOT_MUL = 0x9E3779B9
_SLOT_ADD = 0x632BE5AB
_COIN_XOR = 0x5BD1E995


def mix32(x: jax.Array) -> jax.Array:
    """lowbias32 finaliser on uint32 (any shape); a bijection with good avalanche."""
    x = x ^ (x >> 16)
    x = x * _U32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * _U32(0x846CA68B)
    return x ^ (x >> 16)


def mulhi32(a: jax.Array, b) -> jax.Array:
    """High 32 bits of the 64-bit product of two uint32 values, with uint32 ops only."""
    b = jnp.asarray(b, _U32)
    lo16 = _U32(0xFFFF)
    a_lo, a_hi = a & lo16, a >> 16
    b_lo, b_hi = b & lo16, b >> 16
    t = a_lo * b_lo
    mid1 = a_hi * b_lo + (t >> 16)  # < 2^32: (2^16-1)^2 + 2^16 - 1
    mid2 = a_lo * b_hi + (mid1 & lo16)
    return a_hi * b_hi + (mid1 >> 16) + (mid2 >> 16)


def seed_to_u32(seed) -> jax.Array:
    """int (any size, taken mod 2^32) or an int32/uint32 scalar array (may be traced) -> uint32."""
    if isinstance(seed, (int, np.integer)):
        return jnp.asarray(int(seed) & 0xFFFFFFFF, _U32)
    seed = jnp.asarray(seed)
    if seed.shape != ():
        raise ValueError(f"seed must be a scalar, got shape {seed.shape}; pass one int per step")
    if seed.dtype == _U32:
        return seed
    if seed.dtype == jnp.int32:
        return jax.lax.bitcast_convert_type(seed, _U32)
    if jnp.issubdtype(seed.dtype, jnp.integer):
        return seed.astype(_U32)
    raise ValueError(f"seed must be an integer scalar, got dtype {seed.dtype}")


def stream_keys(seed_u32: jax.Array, streams: jax.Array, sharing: str) -> jax.Array:
    """Per-stream hash key (uint32, shape of ``streams``): one per row or block of rows."""
    base = mix32(seed_u32 ^ _U32(_SHARING_TAG[sharing]))
    return mix32(base ^ streams.astype(_U32))


def slot_keys(j: jax.Array) -> jax.Array:
    """Per-slot hash term for sample slots ``j`` (uint32, shape of ``j``)."""
    return mix32(j.astype(_U32) * _U32(_SLOT_MUL) + _U32(_SLOT_ADD))


def draw_hash(stream_key: jax.Array, slot_key: jax.Array) -> jax.Array:
    """The 32-bit hash of one draw; broadcasts stream keys against slot keys."""
    return mix32(stream_key ^ slot_key)


def uniform_ids(h: jax.Array, num_items: int) -> jax.Array:
    """Multiply-shift map of uint32 hashes to int32 ids in [0, num_items)."""
    return mulhi32(h, num_items).astype(jnp.int32)


def alias_coin(h: jax.Array) -> jax.Array:
    """A float32 coin in [0, 1) with 24-bit resolution, independent-looking from ``h``'s column."""
    bits = (mix32(h ^ _U32(_COIN_XOR)) >> 8).astype(jnp.int32)
    return bits.astype(jnp.float32) * jnp.float32(2.0**-24)


def alias_pick(column: jax.Array, coin: jax.Array, prob_at_col: jax.Array,
               alias_at_col: jax.Array) -> jax.Array:
    """Alias-method choice given the gathered ``prob[column]`` and ``alias[column]``."""
    return jnp.where(coin < prob_at_col, column, alias_at_col)


class _HostCounts:
    """Item counts kept on the host beside a ``PopularityTable`` (static pytree data: hashed by
    content, so a jitted function that takes the table as an argument still sees them)."""

    def __init__(self, counts: np.ndarray):
        self.counts = counts
        self.digest = hashlib.sha1(np.ascontiguousarray(counts)).hexdigest()

    def __hash__(self):
        return hash(self.digest)

    def __eq__(self, other):
        return isinstance(other, _HostCounts) and other.digest == self.digest


@jax.tree_util.register_pytree_node_class
class PopularityTable:
    """Device arrays for popularity sampling (``q ∝ item_counts``): the alias table ``prob``
    (float32[V]) and ``alias`` (int32[V]), and ``log_q`` (float32[V], -inf where q = 0) for the
    logQ correction. Build it once per dataset with ``popularity_table(item_counts)``, which
    also keeps the counts on the host (vocabulary parallelism builds its per-shard tables from
    them)."""

    def __init__(self, prob, alias, log_q, counts=None):
        self.prob, self.alias, self.log_q = prob, alias, log_q
        self._counts = counts if counts is None or isinstance(counts, _HostCounts) else (
            _HostCounts(np.asarray(counts, np.float64)))

    def host_counts(self) -> np.ndarray | None:
        """The float64 item counts the table was built from (None if it was built otherwise)."""
        return None if self._counts is None else self._counts.counts

    def tree_flatten(self):
        return (self.prob, self.alias, self.log_q), self._counts

    @classmethod
    def tree_unflatten(cls, counts, children):
        return cls(*children, counts=counts)

    def __repr__(self):
        return f"PopularityTable(V={jnp.shape(self.prob)[0]})"


def check_counts(item_counts) -> np.ndarray:
    """float64 [V] counts after one-line checks (concrete, 1-D, V >= 2, finite, >= 0, sum > 0)."""
    try:
        counts = np.asarray(item_counts, dtype=np.float64)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError) as err:
        raise ValueError(
            "item_counts is a traced array; build the table outside jit with "
            "pallas_kernels.popularity_table(counts) and pass that instead") from err
    if counts.ndim != 1 or counts.size < 2:
        raise ValueError(f"item_counts must be a 1-D array over the V >= 2 labels, got shape "
                         f"{counts.shape} (drop the padding slot: counts[1:] of encoded ids)")
    if not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise ValueError("item_counts must be finite and non-negative")
    if counts.sum() <= 0:
        raise ValueError("item_counts sums to 0: popularity sampling needs at least one count")
    return counts


def build_alias_table(item_counts) -> tuple[np.ndarray, np.ndarray]:
    """Vose's alias table for ``q ∝ item_counts``: ``(prob float32[V], alias int32[V])``, O(V).

    Built once per dataset in numpy (float64 arithmetic). Draw: column ``k`` uniform, keep ``k``
    with probability ``prob[k]``, else take ``alias[k]``.
    """
    counts = check_counts(item_counts)
    v = counts.size
    scaled = counts * (v / counts.sum())
    prob = np.ones(v, dtype=np.float64)
    alias = np.arange(v, dtype=np.int64)
    small = np.flatnonzero(scaled < 1.0).tolist()
    large = np.flatnonzero(scaled >= 1.0).tolist()
    work = scaled.tolist()
    while small and large:
        s, l = small.pop(), large[-1]
        prob[s] = work[s]
        alias[s] = l
        work[l] = (work[l] + work[s]) - 1.0
        if work[l] < 1.0:
            small.append(large.pop())
    # Leftovers hold probability 1 up to rounding error; a zero-count column must never be drawn.
    fallback = int(np.argmax(counts))
    for k in small + large:
        prob[k], alias[k] = (1.0, k) if counts[k] > 0 else (0.0, fallback)
    return prob.astype(np.float32), alias.astype(np.int32)


def popularity_table_np(item_counts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(prob f32[V], alias i32[V], log_q f32[V])`` in numpy."""
    counts = check_counts(item_counts)
    prob, alias = build_alias_table(counts)
    with np.errstate(divide="ignore"):
        log_q = (np.log(counts) - math.log(counts.sum())).astype(np.float32)
    return prob, alias, log_q


def popularity_table(item_counts) -> PopularityTable:
    """The ``PopularityTable`` of ``q ∝ item_counts`` ([V] counts over labels 0..V-1, on the
    host; build it once per dataset, outside jit)."""
    counts = check_counts(item_counts)
    prob, alias, log_q = popularity_table_np(counts)
    return PopularityTable(jnp.asarray(prob), jnp.asarray(alias), jnp.asarray(log_q),
                           counts=counts)


def num_streams(n_rows: int, sharing: str, block_rows: int) -> int:
    """Number of independent negative sets: one per row, or one per block of rows."""
    return n_rows if sharing == "row" else -(-n_rows // block_rows)


def check_sampling_args(num_negatives: int, num_items: int, sharing: str,
                        block_rows: int) -> None:
    if sharing not in SHARINGS:
        raise ValueError(f"sharing must be one of {SHARINGS}, got {sharing!r}")
    if not isinstance(num_negatives, (int, np.integer)) or num_negatives < 1:
        raise ValueError(f"num_negatives must be a positive int, got {num_negatives!r}")
    if not isinstance(num_items, (int, np.integer)) or not 2 <= num_items < 2**31:
        raise ValueError(f"the classifier must have V in [2, 2^31) rows, got {num_items!r}")
    if block_rows < 1:
        raise ValueError(f"block_rows must be positive, got {block_rows}")


def check_sampler(sampler, num_items: int) -> None:
    """``sampler`` must be None (uniform) or a ``PopularityTable`` over the V classes."""
    if sampler is None:
        return
    if not isinstance(sampler, PopularityTable):
        raise ValueError(f"sampler must be None (uniform) or a PopularityTable from "
                         f"pallas_kernels.popularity_table(item_counts), got "
                         f"{type(sampler).__name__}")
    if jnp.shape(sampler.prob) != (num_items,):
        raise ValueError(f"the PopularityTable covers {jnp.shape(sampler.prob)[0]} items but the "
                         f"classifier has {num_items} rows; build it from counts over labels "
                         f"0..V-1")


def ids_for_streams(seed_u32: jax.Array, streams: jax.Array, num_negatives: int, num_items: int,
                    sampler: str, sharing: str, table: PopularityTable | None) -> jax.Array:
    """int32[len(streams), num_negatives] ids drawn by the given streams (plain JAX)."""
    keys = stream_keys(seed_u32, streams, sharing)[:, None]
    h = draw_hash(keys, slot_keys(jnp.arange(num_negatives, dtype=jnp.uint32))[None, :])
    col = uniform_ids(h, num_items)
    if sampler == "uniform":
        return col
    return alias_pick(col, alias_coin(h), table.prob[col], table.alias[col])


def sampled_negative_ids(seed, n_rows: int, num_negatives: int, num_items: int, *,
                         sampler: PopularityTable | None = None, sharing: str = "row",
                         block_rows: int = 128) -> jax.Array:
    """The negative ids ``sampled_linear_cross_entropy`` draws: ``int32[S, num_negatives]``.

    ``S = n_rows`` for ``sharing="row"`` (row r uses ``ids[r]``) and ``ceil(n_rows /
    block_rows)`` for ``"block"`` (row r uses ``ids[r // block_rows]``). ``sampler``: None
    (uniform) or a ``PopularityTable``. Negatives equal to a row's target are drawn here but
    excluded by the loss.
    """
    check_sampling_args(num_negatives, num_items, sharing, block_rows)
    check_sampler(sampler, num_items)
    return _ids_jit(seed_to_u32(seed), sampler, num_streams(n_rows, sharing, block_rows),
                    num_negatives, num_items, sharing)


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5))
def _ids_jit(seed_u32, table, n_streams, num_negatives, num_items, sharing):
    # One compiled program per configuration (eager callers would otherwise dispatch op by op).
    streams = jnp.arange(n_streams, dtype=jnp.uint32)
    return ids_for_streams(seed_u32, streams, num_negatives, num_items,
                           "uniform" if table is None else "popularity", sharing, table)


def expand_ids(ids: jax.Array, n_rows: int, sharing: str, block_rows: int) -> jax.Array:
    """Per-row view ``[n_rows, n]`` of the ids from ``sampled_negative_ids`` (tests/references)."""
    if sharing == "row":
        return ids
    return jnp.repeat(ids, block_rows, axis=0)[:n_rows]
