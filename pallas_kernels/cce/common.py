"""Shared tile math and launch settings of the CCE Pallas kernels (Triton lowering; the
Hopper forward in Mosaic GPU is ``forward_mosaic.py``)."""

from __future__ import annotations

import dataclasses
import math
import struct

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

LOG2E = math.log2(math.e)
LN2 = math.log(2.0)


@dataclasses.dataclass(frozen=True)
class KernelPlan:
    """Every tile and launch setting of one CCE call, resolved (``default_plan``, then the
    user's ``CCEConfig`` in ``config.resolve``). Tiles are powers of two (Triton loads
    power-of-two blocks only).

    fwd_*: the undifferentiated Triton forward (row tile x catalog tile, warps, stages, and
    ``fwd_sum_tile``: keep the sum of exponentials as a [block_n, block_v] tile, reduced once at
    the end); ``num_splits``: catalog chunks per row tile of that forward (merged afterwards),
    for small N. fde_*: the forward of a differentiated call, which also accumulates
    sum_v softmax_rv c_v (``forward.py``), so that the backward runs the dC kernel only.
    bwd_*: the dE and dC backward kernels. fwd_impl: "triton" (``forward.py``) or "mosaic"
    (``forward_mosaic.py``) for the undifferentiated forward; mosaic_*: that kernel's rows per
    compute warpgroup, catalog tile, shared-memory ring depth, E tile in registers, ping-pong
    and compute warpgroups per CTA.
    """

    fwd_block_n: int
    fwd_block_v: int
    fwd_warps: int
    fwd_stages: int
    fwd_sum_tile: bool
    num_splits: int
    bwd_block_n: int
    bwd_block_v: int
    bwd_warps: int
    bwd_stages: int
    fde_block_n: int
    fde_block_v: int
    fde_warps: int
    fde_stages: int
    fde_sum_tile: bool
    fwd_impl: str
    mosaic_block_n: int
    mosaic_block_v: int
    mosaic_slots: int
    mosaic_lhs_regs: bool
    mosaic_pingpong: bool
    mosaic_compute_wgs: int


# Per D: (fwd_block_n, fwd_block_v, fwd_warps, fwd_stages, fwd_sum_tile), (bwd_block_n,
# bwd_block_v, bwd_warps), fde_stages. Tiles measured on an H200 (2026-11-22, N=32768, V=1e6,
# bf16; table in docs/kernels.md); the fused forward's tiles equal the backward's and its stages,
# bwd_stages=3, the D=128 forward tile and, with the FMA exponentials, the D=64 row sums and the
# D=128 two stages (3 programs per SM instead of 2) were measured on an H100 at N=131072
# (docs/kernels.md). Larger D takes smaller tiles: the resident E tile, the pipelined C tiles and
# the f32 accumulators must fit in registers and 228 KB of shared memory.
_DEFAULTS = {
    64: ((64, 128, 4, 3, False), (64, 64, 4), 3),
    128: ((128, 64, 4, 2, True), (64, 128, 4), 3),
    256: ((256, 64, 8, 3, True), (64, 64, 4), 2),
    512: ((64, 32, 4, 3, True), (32, 32, 4), 2),  # float32 at D=256: as bf16 D=512 per row
}


# Forward programs wanted in flight: two per SM of an H100/H200.
_SMS = 132
_TARGET_PROGRAMS = 2 * _SMS
_MAX_SPLITS = 8

# The Mosaic GPU forward (forward_mosaic.py) where it measured faster than the Triton one on an
# H100 (N=131072, V=1e6, bf16; docs/decisions/001): D -> (rows per compute warpgroup, catalog tile,
# ring depth, E in registers). At D = 64 the Triton forward is faster.
MOSAIC_DEFAULTS = {128: (128, 64, 8, True), 256: (64, 64, 4, True)}
_MOSAIC_OFF = (64, 64, 3, False)


def mosaic_gpu_available() -> bool:
    """A Hopper GPU and a jax whose Mosaic GPU lowering the kernel was measured with (0.11)."""
    try:
        dev = jax.devices()[0]
    except RuntimeError:
        return False
    version = tuple(int(x) for x in jax.__version__.split(".")[:2])
    return (dev.platform == "gpu" and version >= (0, 11)
            and str(getattr(dev, "compute_capability", "")).startswith("9."))


def _mosaic_tiles(n: int, v: int, d: int, itemsize: int):
    """The Mosaic forward's tiles if it is the default here, else None: bf16/f16, a measured
    D, V % 8 == 0 (its tiled view of the table) and at least one CTA per SM (smaller batches
    keep the Triton forward, which splits the catalog to fill the GPU)."""
    tiles = MOSAIC_DEFAULTS.get(d) if itemsize == 2 and v % 8 == 0 else None
    if tiles is None or n < 2 * tiles[0] * _SMS or not mosaic_gpu_available():
        return None
    return tiles


def mosaic_tiles_for(d: int) -> dict:
    """The Mosaic forward's tiles for width ``d`` (the measured ones, else small safe ones)."""
    mbn, mbv, mslots, mregs = MOSAIC_DEFAULTS.get(d, _MOSAIC_OFF)
    return dict(mosaic_block_n=mbn, mosaic_block_v=mbv, mosaic_slots=mslots,
                mosaic_lhs_regs=mregs)


def default_plan(n: int, v: int, d: int, itemsize: int = 2) -> KernelPlan:
    """Defaults by the bytes of one row (float32 rows count as bf16 rows twice as long).

    Small N (fewer row tiles than ~2 per SM) splits the catalog over up to 8 programs per row
    tile so the forward fills the GPU (H100, V = 1e6, D = 128: N = 2048 forward 1.5 vs 8.2 ms
    with one split; docs/kernels.md).
    """
    width = d * max(1, itemsize // 2)
    key = next((k for k in sorted(_DEFAULTS) if width <= k), max(_DEFAULTS))
    (fbn, fbv, fw, fstages, fsum_tile), (bbn, bbv, bw), fde_stages = _DEFAULTS[key]
    row_tiles = -(-n // fbn)
    catalog_tiles = -(-v // fbv)
    splits = max(1, min(_MAX_SPLITS, -(-_TARGET_PROGRAMS // row_tiles), catalog_tiles // 16))
    mosaic = _mosaic_tiles(n, v, d, itemsize)
    (mbn, mbv, mslots, mregs) = mosaic or _MOSAIC_OFF
    return KernelPlan(fwd_block_n=fbn, fwd_block_v=fbv, fwd_warps=fw, fwd_stages=fstages,
                      fwd_sum_tile=fsum_tile, num_splits=splits,
                      bwd_block_n=bbn, bwd_block_v=bbv, bwd_warps=bw, bwd_stages=3,
                      fde_block_n=bbn, fde_block_v=bbv, fde_warps=bw, fde_stages=fde_stages,
                      fde_sum_tile=False,
                      fwd_impl="mosaic" if mosaic else "triton", mosaic_block_n=mbn,
                      mosaic_block_v=mbv, mosaic_slots=mslots, mosaic_lhs_regs=mregs,
                      mosaic_pingpong=True, mosaic_compute_wgs=2)


def compiler_params(num_warps: int, num_stages: int):
    return plgpu.CompilerParams(num_warps=num_warps, num_stages=num_stages)


def next_pow2(x: int) -> int:
    return 1 << max(0, (x - 1).bit_length())


def dot_precision(dtype):
    # float32 inputs: IEEE products (Triton would use TF32 by default); bf16: native MMA.
    return lax.Precision.HIGHEST if dtype == jnp.float32 else lax.Precision.DEFAULT


def dot_nt(a, b, precision):
    """a [m, k] . b [n, k]^T -> float32 [m, n]."""
    return lax.dot_general(a, b, (((1,), (1,)), ((), ())), precision=precision,
                           preferred_element_type=jnp.float32)


def dot_nn(a, b, precision):
    """a [m, k] . b [k, n] -> float32 [m, n]."""
    return lax.dot_general(a, b, (((1,), (0,)), ((), ())), precision=precision,
                           preferred_element_type=jnp.float32)


def exp_mode(interpret: bool) -> str:
    """How the kernels take exponentials: "fma" (compiled: 2^(x log2 e - shift) as one FFMA and
    one MUFU ex2 in inline PTX; Triton would emit the scale and the shift as FMUL + FADD and
    libdevice's exp2f wraps the ex2 in range checks) or "xla" (jnp.exp2, the
    interpreter)."""
    return "xla" if interpret else "fma"


_LOG2E_PTX = "0f" + struct.pack(">f", LOG2E).hex().upper()  # log2(e) rounded to float32


def exp2_shifted(x, shift, mode: str):
    """2**(x * log2(e) - shift), float32; ``shift`` broadcasts against x ([rows, 1] or [1, cols]).
    ``mode`` as ``exp_mode``: "fma" rounds x * log2(e) - shift once (FMA); "ex2" (kept for the
    accuracy test that compares the two) rounds it twice, then the same MUFU ex2."""
    if mode != "fma":
        return exp2(x * LOG2E - shift, mode)
    return plgpu.elementwise_inline_asm(
        "{ .reg .f32 t; fma.rn.ftz.f32 t, $1, " + _LOG2E_PTX + ", $2; ex2.approx.ftz.f32 $0, t; }",
        args=[x, jnp.broadcast_to(-shift, x.shape)], constraints="=r,r,r", pack=1,
        result_shape_dtypes=[jax.ShapeDtypeStruct(x.shape, jnp.float32)])[0]


def exp2(x, mode: str):
    """2**x in float32. ``mode`` as ``exp_mode``: "xla" jnp.exp2, else one MUFU ex2.approx.ftz
    (no libdevice wrapper; GPU only)."""
    if mode == "xla":
        return jnp.exp2(x)
    return plgpu.elementwise_inline_asm(
        "ex2.approx.ftz.f32 $0, $1;", args=[x], constraints="=r,r", pack=1,
        result_shape_dtypes=[jax.ShapeDtypeStruct(x.shape, x.dtype)])[0]


# Tensor-core accumulation chains in the backward (``chained_sum``). The float32 MMA accumulator
# does not round to nearest on each k-step (16 products), so a chain of K steps can lose about
# K x 2^-24 relatively, toward zero. Measured on an H100 (2026-11-22): one chain over a whole
# 4.2M-item catalog chunk (D = 256, bf16) left dE 1.6% of its error scale off (the chunked XLA
# path: 0.43%, bf16 output rounding). Loops over at most SINGLE_CHAIN_ITEMS items (65536 k-steps,
# <= 0.4%) stay one chain: restarting costs ~10% of the backward at D = 64 (H100, V = 1e6:
# 229 vs 209 ms; Triton pipelines a nested loop less well). Longer loops restart every
# CHAIN_ITEMS items (4096 k-steps, <= 2.4e-4) and add the chains with round-to-nearest adds.
SINGLE_CHAIN_ITEMS = 2**20
CHAIN_ITEMS = 2**16


def chained_sum(n_steps: int, step, zeros, items_per_step: int):
    """``step(j, acc) = acc + dot(...)`` folded over j in [0, n_steps) (static): one loop, or,
    past SINGLE_CHAIN_ITEMS items, restarted chains of CHAIN_ITEMS items summed by plain adds."""
    if n_steps <= 0:
        return zeros
    chain = max(1, CHAIN_ITEMS // items_per_step)
    if n_steps * items_per_step <= SINGLE_CHAIN_ITEMS or n_steps <= chain:
        return lax.fori_loop(0, n_steps, step, zeros)
    n_chains, rest = divmod(n_steps, chain)

    def one_chain(k, acc):
        return acc + lax.fori_loop(k * chain, (k + 1) * chain, step, zeros)

    acc = lax.fori_loop(0, n_chains, one_chain, zeros)
    if rest:
        acc = acc + lax.fori_loop(n_chains * chain, n_steps, step, zeros)
    return acc


def chained_range_sum(lo, hi, max_steps: int, step, zeros, items_per_step: int):
    """``chained_sum`` over j in [lo, hi) with traced bounds (at most ``max_steps`` steps); the
    carry may be a tuple of arrays, all additive."""
    chain = max(1, CHAIN_ITEMS // items_per_step)
    if max_steps * items_per_step <= SINGLE_CHAIN_ITEMS or max_steps <= chain:
        return lax.fori_loop(lo, hi, step, zeros)

    def one_chain(k, acc):
        a = lo + k * chain
        part = lax.fori_loop(a, jnp.minimum(a + chain, hi), step, zeros)
        return jax.tree_util.tree_map(jnp.add, acc, part)

    return lax.fori_loop(0, (hi - lo + chain - 1) // chain, one_chain, zeros)


def traced(index: int, program_axis: int = 0):
    """``index`` as a traced int32 (call at the kernel's top level, not inside lax.cond)."""
    return index + 0 * pl.program_id(program_axis)


def load_rows(ref, start, size: int, n_valid: int | None):
    """Rows [start, start + size) of a 2-D ref; rows >= n_valid (if given) read as zeros."""
    if n_valid is None:
        return ref[pl.ds(start, size), :]
    # ``start`` must be traced: a static slice running past the end is rejected at trace time
    # even when masked (see ``traced``); the GPU masks, the interpreter pads.
    rows = start + jnp.arange(size)
    return plgpu.load(ref.at[pl.ds(start, size), :], mask=(rows < n_valid)[:, None], other=0.0)
