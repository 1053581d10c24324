"""Counter-based negative sampling that runs identically in plain JAX and inside Pallas kernels.

Every negative id is a pure function of ``(seed, stream, j)``: ``stream`` is the row index
(``sharing="row"``), the row-tile index (``"block"``) or 0 (``"batch"``), and ``j`` is the sample
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

Uniform ids with row sharing and ``row_sampling="permutation"`` (opt-in): rows come in
blocks of M (M = 2^p * b just above V, 2^p ~ sqrt(V)); slot ``j`` of block ``k`` maps the block's
rows to [0, M) by a keyed 4-round Feistel permutation (alternating rounds on Z_b x Z_(2^p),
round function ``mix32(half ^ round key)``; keys from ``(seed, j, k)``). A row whose position maps
into [V, M) has no negative at that slot: the draw is dropped (id -1) and, like a draw of the
target, does not count in ``n_eff``; the kept draws are still i.i.d. uniform over the items, so
the logQ correction stays unbiased. Fewer than 2^p / M < 3 / sqrt(V) of the draws are dropped
(0.045% at V = 10^6). Each row's draws are independent across slots (independent keys), as
with the hash; what differs is that within one slot the rows of a block draw *distinct* items.
The point is the inverse: ``perm_rows`` gives, for item ``v`` and slot ``j``, the one row of
each block that drew it, so the backward computes dC by gathering rows of E per item instead of
scattering atomics into dC (``kernels.py``): deterministic, exact float32 sums, no [V, D]
buffer, but 1.5-1.7x slower than the atomic backward at N = 131072, V = 10^6 (docs/perf_sampled.md),
so ``row_sampling="independent"`` (the plain hash, independent draws for every (row, slot)) is
the default.

Popularity ids (``q_j = count_j / sum(count)``): Walker/Vose alias table. Column ``k`` is the
uniform id above; a second hash ``mix32(h ^ 0x5BD1E995)`` gives a 24-bit coin ``u`` in [0, 1); the
draw is ``k`` if ``u < prob[k]`` else ``alias[k]``. Probabilities are thus quantised to 2^-24.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

SAMPLERS = ("uniform", "popularity")
SHARINGS = ("row", "block", "batch")
ROW_SAMPLINGS = ("independent", "permutation")

_U32 = jnp.uint32
# Domain-separation tags: the same seed gives unrelated ids in the three sharing modes.
_SHARING_TAG = {"row": 0x243F6A88, "block": 0x6A09E667, "batch": 0xBB67AE85}
_SLOT_MUL = 0x9E3779B9
_SLOT_ADD = 0x632BE5AB
_COIN_XOR = 0x5BD1E995
_PERM_TAG = 0x452821E6
_PERM_BLOCK_MUL = 0x85EBCA6B
_PERM_ROUNDS = (0x38D01377, 0xBE5466CF, 0x34E90C6C, 0xC0AC29B7)


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
    """Per-stream hash key (uint32, shape of ``streams``): one per row, tile or batch."""
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


def uses_permutation(sampler: str, sharing: str, row_sampling: str) -> bool:
    """Whether row ids come from the per-slot permutation (module docstring)."""
    return sampler == "uniform" and sharing == "row" and row_sampling == "permutation"


def perm_shape(num_items: int) -> tuple[int, int]:
    """(p, b): the permutation's domain is [0, M), M = 2^p * b >= V with 2^p ~ sqrt(V) (of the
    three p nearest half of V's bits, the one with the smallest M; M - V < 2^p)."""
    half = max(1, (num_items - 1).bit_length() // 2)
    size = lambda p: (1 << p) * -(-num_items // (1 << p))
    candidates = [q for q in (half - 1, half, half + 1) if q >= 1]
    p = min(candidates, key=lambda q: (size(q), abs(q - half)))
    return p, -(-num_items // (1 << p))


def perm_domain(num_items: int) -> int:
    """M: rows come in blocks of M; a draw that lands in [V, M) is dropped."""
    p, b = perm_shape(num_items)
    return (1 << p) * b


def perm_key(seed_u32: jax.Array) -> jax.Array:
    """The permutation sampler's per-call key (uint32 scalar) from the seed."""
    return mix32(seed_u32 ^ _U32(_PERM_TAG))


def _round_keys(key, j, block):
    """Four uint32 Feistel round keys of slot ``j`` and row block ``block`` (broadcasting). The
    block enters by a multiply-xor, so per-slot keys stay scalars where the block is one."""
    k = mix32(key ^ slot_keys(jnp.asarray(j)))
    blk = jnp.asarray(block).astype(_U32) * _U32(_PERM_BLOCK_MUL)
    return [mix32(k ^ _U32(c)) ^ blk for c in _PERM_ROUNDS]


def _add_mod(x, y, m):
    s = x + y  # x, y <= m < 2^31: no wrap
    return jnp.where(s >= m, s - m, s)


def _feistel(x, rks, p: int, b: int, inverse: bool):
    """The keyed bijection of [0, 2^p * b) (or its inverse) on uint32 x: 4 alternating rounds
    on (hi, lo) in Z_b x Z_(2^p), round function mix32(half ^ key) mod the other half's size."""
    mask, bb = _U32((1 << p) - 1), _U32(b)
    lo, hi = x & mask, x >> p
    f = lambda y, k: mix32(y ^ k)
    if not inverse:
        lo = (lo + f(hi, rks[0])) & mask
        hi = _add_mod(hi, f(lo, rks[1]) % bb, bb)
        lo = (lo + f(hi, rks[2])) & mask
        hi = _add_mod(hi, f(lo, rks[3]) % bb, bb)
    else:  # y - f mod b as y + (b - f mod b), which is in [1, b]
        hi = _add_mod(hi, bb - f(lo, rks[3]) % bb, bb)
        lo = (lo - f(hi, rks[2])) & mask
        hi = _add_mod(hi, bb - f(lo, rks[1]) % bb, bb)
        lo = (lo - f(hi, rks[0])) & mask
    return (hi << p) | lo


def perm_ids(key: jax.Array, rows: jax.Array, j, num_items: int) -> jax.Array:
    """int32 ids drawn by global rows ``rows`` at slots ``j`` (broadcasting; uint32 ``key`` from
    ``perm_key``): row r takes position r mod M of block r // M's permutation of [0, M); a
    position that maps past the catalog gives -1, a dropped draw (excluded like the target)."""
    p, b = perm_shape(num_items)
    m = _U32((1 << p) * b)
    rows = jnp.asarray(rows).astype(_U32)
    x = _feistel(rows % m, _round_keys(key, j, rows // m), p, b, inverse=False)
    return jnp.where(x < _U32(num_items), x.astype(jnp.int32), -1)


def perm_rows(key: jax.Array, items: jax.Array, j, block, num_items: int) -> jax.Array:
    """int32 row of row block ``block`` that drew each of ``items`` (in [0, V)) at slot ``j``,
    the inverse of ``perm_ids``; the row may be past the batch (then nobody drew the item)."""
    p, b = perm_shape(num_items)
    pos = _feistel(jnp.asarray(items).astype(_U32), _round_keys(key, j, block), p, b,
                   inverse=True)
    return jnp.asarray(block).astype(jnp.int32) * ((1 << p) * b) + pos.astype(jnp.int32)


class PopularityTable(NamedTuple):
    """Device arrays for popularity sampling: alias table plus ``log q`` for the logQ correction."""

    prob: jax.Array  # float32[V]: acceptance probability of column k
    alias: jax.Array  # int32[V]: fallback id of column k
    log_q: jax.Array  # float32[V]: log of the sampling probability of each id (-inf if 0)


def _check_counts(item_counts) -> np.ndarray:
    try:
        counts = np.asarray(item_counts, dtype=np.float64)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError) as err:
        raise ValueError(
            "item_counts is a traced array; build the table outside jit with "
            "pallas_kernels.cce_neg.popularity_table(counts) and pass that instead") from err
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
    counts = _check_counts(item_counts)
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
    counts = _check_counts(item_counts)
    prob, alias = build_alias_table(counts)
    with np.errstate(divide="ignore"):
        log_q = (np.log(counts) - math.log(counts.sum())).astype(np.float32)
    return prob, alias, log_q


def popularity_table(item_counts) -> PopularityTable:
    """Alias table plus ``log q`` as device arrays (build once per dataset, outside jit)."""
    return PopularityTable(*(jnp.asarray(a) for a in popularity_table_np(item_counts)))


def num_streams(n_rows: int, sharing: str, block_rows: int) -> int:
    """Number of independent negative sets: rows, row tiles, or 1."""
    if sharing == "row":
        return n_rows
    if sharing == "block":
        return -(-n_rows // block_rows)
    return 1


def check_sampling_args(num_negatives: int, num_items: int, sampler: str, sharing: str,
                        block_rows: int, row_sampling: str = "independent") -> None:
    if row_sampling not in ROW_SAMPLINGS:
        raise ValueError(f"row_sampling must be one of {ROW_SAMPLINGS}, got {row_sampling!r}")
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if sharing not in SHARINGS:
        raise ValueError(f"sharing must be one of {SHARINGS}, got {sharing!r}")
    if not isinstance(num_negatives, (int, np.integer)) or num_negatives < 1:
        raise ValueError(f"num_negatives must be a positive int, got {num_negatives!r}")
    if not isinstance(num_items, (int, np.integer)) or not 2 <= num_items < 2**31:
        raise ValueError(f"num_items must be an int in [2, 2^31), got {num_items!r}")
    if block_rows < 1:
        raise ValueError(f"block_rows must be positive, got {block_rows}")


def ids_for_streams(seed_u32: jax.Array, streams: jax.Array, num_negatives: int, num_items: int,
                    sampler: str, sharing: str, table: PopularityTable | None,
                    row_sampling: str = "independent") -> jax.Array:
    """int32[len(streams), num_negatives] ids drawn by the given streams (plain JAX)."""
    if uses_permutation(sampler, sharing, row_sampling):
        j = jnp.arange(num_negatives, dtype=jnp.uint32)[None, :]
        return perm_ids(perm_key(seed_u32), streams.astype(jnp.uint32)[:, None], j, num_items)
    keys = stream_keys(seed_u32, streams, sharing)[:, None]
    h = draw_hash(keys, slot_keys(jnp.arange(num_negatives, dtype=jnp.uint32))[None, :])
    col = uniform_ids(h, num_items)
    if sampler == "uniform":
        return col
    return alias_pick(col, alias_coin(h), table.prob[col], table.alias[col])


def sampled_negative_ids(seed, n_rows: int, num_negatives: int, num_items: int, *,
                         sampler: str = "uniform", alias_table=None, item_counts=None,
                         sharing: str = "row", block_rows: int = 128,
                         row_sampling: str = "independent") -> jax.Array:
    """The negative ids the CCE- kernels draw: ``int32[S, num_negatives]``.

    ``S = n_rows`` for ``sharing="row"`` (row r uses ``ids[r]``), ``ceil(n_rows / block_rows)`` for
    ``"block"`` (row r uses ``ids[r // block_rows]``) and 1 for ``"batch"``. Popularity sampling
    needs ``alias_table`` (a ``(prob, alias)`` pair or a ``PopularityTable``) or ``item_counts``.
    Negatives equal to a row's target are drawn here but excluded by the loss.
    ``row_sampling`` (uniform, row sharing): "independent" or "permutation" (module docstring;
    the permutation's dropped draws are -1).
    """
    check_sampling_args(num_negatives, num_items, sampler, sharing, block_rows, row_sampling)
    table = None
    if sampler == "popularity":
        if alias_table is None:
            if item_counts is None:
                raise ValueError("sampler='popularity' needs alias_table or item_counts")
            alias_table = build_alias_table(item_counts)
        prob, alias = alias_table[0], alias_table[1]
        if np.shape(prob) != (num_items,) or np.shape(alias) != (num_items,):
            raise ValueError(f"alias table has shape {np.shape(prob)}, expected ({num_items},)")
        table = PopularityTable(jnp.asarray(prob, jnp.float32), jnp.asarray(alias, jnp.int32),
                                jnp.zeros((num_items,), jnp.float32))
    return _ids_jit(seed_to_u32(seed), table, num_streams(n_rows, sharing, block_rows),
                    num_negatives, num_items, sampler, sharing, row_sampling)


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5, 6, 7))
def _ids_jit(seed_u32, table, n_streams, num_negatives, num_items, sampler, sharing,
             row_sampling):
    # One compiled program per configuration (eager callers would otherwise dispatch op by op).
    streams = jnp.arange(n_streams, dtype=jnp.uint32)
    return ids_for_streams(seed_u32, streams, num_negatives, num_items, sampler, sharing, table,
                           row_sampling)


def expand_ids(ids: jax.Array, n_rows: int, sharing: str, block_rows: int) -> jax.Array:
    """Per-row view ``[n_rows, n]`` of the ids from ``sampled_negative_ids`` (tests/references)."""
    if sharing == "row":
        return ids
    if sharing == "block":
        return jnp.repeat(ids, block_rows, axis=0)[:n_rows]
    return jnp.broadcast_to(ids, (n_rows, ids.shape[1]))
