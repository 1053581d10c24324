"""Shared tile math and launch settings of the CCE Pallas kernels (Triton lowering)."""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

LOG2E = math.log2(math.e)
LN2 = math.log(2.0)


@dataclasses.dataclass(frozen=True)
class KernelConfig:
    """Tile sizes (powers of two: Triton loads power-of-two blocks only) and launch settings.

    fwd_*: forward (row tile x catalog tile); bwd_*: backward; ``num_splits``: catalog chunks per
    row tile in the forward (merged afterwards), for small N; ``bwd_mode``: "two_pass" (a kernel
    owning dE row tiles and one owning dC catalog tiles) or "atomic" (one pass, f32 atomics on dC).
    """

    fwd_block_n: int = 128
    fwd_block_v: int = 128
    fwd_warps: int = 8
    fwd_stages: int = 3
    num_splits: int = 1
    bwd_block_n: int = 64
    bwd_block_v: int = 128
    bwd_warps: int = 8
    bwd_stages: int = 2
    bwd_mode: str = "two_pass"
    exp_asm: bool = False  # ex2.approx.ftz via inline PTX instead of libdevice exp2f


def default_config(n: int, v: int, d: int) -> KernelConfig:
    # Register budget: a row tile of E and its f32 dE accumulator stay resident, so larger D
    # takes smaller row tiles in the backward.
    if d <= 64:
        return KernelConfig(fwd_block_n=128, fwd_block_v=128, bwd_block_n=128, bwd_block_v=64)
    if d <= 128:
        return KernelConfig(fwd_block_n=128, fwd_block_v=128, bwd_block_n=64, bwd_block_v=64)
    return KernelConfig(fwd_block_n=64, fwd_block_v=128, bwd_block_n=64, bwd_block_v=32,
                        bwd_warps=4)


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


def exp2(x, use_asm: bool):
    """2**x in float32. ``use_asm``: one MUFU ex2.approx.ftz (no libdevice wrapper); GPU only."""
    if not use_asm:
        return jnp.exp2(x)
    return plgpu.elementwise_inline_asm(
        "ex2.approx.ftz.f32 $0, $1;", args=[x], constraints="=r,r", pack=1,
        result_shape_dtypes=[jax_shape_dtype(x)])[0]


def jax_shape_dtype(x):
    import jax

    return jax.ShapeDtypeStruct(x.shape, x.dtype)


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
