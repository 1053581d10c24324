"""``SampledConfig``: the tiles of the CCE- kernels, and ``get_default``, their heuristic.

Every field left ``None`` is chosen from the shapes by ``get_default(n, v, d, dtype)``. ``Static``
(internal, hashable) is what one call's kernels are specialised on.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

XLA_BLOCK_ROWS = 128  # row chunk of the XLA path with row sharing


def pow2(x: int) -> bool:
    return x > 0 and x & (x - 1) == 0


def triton_width_ok(d: int) -> bool:
    """Whether the Triton kernels take rows of width D (a power of two >= 16)."""
    return pow2(d) and d >= 16


def default_row_block(d: int) -> int:
    """Row tile of the row-sharing kernels: 16 rows at D <= 64, else 8. H100, N = 131072,
    n = 511, V = 10^6 (docs/kernels.md): at D = 64 the forward gathers at the copy
    bandwidth with 16 rows x 4 warps and not with 8 x 4; D >= 128 is fastest with 8."""
    return 16 if d <= 64 else 8


def default_neg_block(d: int, itemsize: int = 2) -> int:
    """Ids per step of the block-sharing kernels: 32 up to D = 128, else 64 (H100, same
    shapes, docs/kernels.md); 32 for 4-byte inputs, whose D = 256 tiles of 64 ids exceed the
    H100's shared memory (256 KiB requested, 227 KiB available)."""
    return 32 if d <= 128 or itemsize >= 4 else 64


def default_num_warps(d: int) -> int:
    """Triton warps: 8 from D = 256 on, else 4 (H200 / H100 sweeps, docs/kernels.md)."""
    return 8 if d >= 256 else 4


@dataclasses.dataclass(frozen=True)
class SampledConfig:
    """Tiles of the CCE- kernels.

    Attributes:
      block_rows: rows that share one set of negatives with ``sharing="block"`` (also that
        kernel's row tile, and the row chunk of its XLA path); a power of two >= 16 for the
        Pallas kernels. Part of the estimator, not only of the speed: it is never chosen for
        you.
      row_block: row tile of the ``sharing="row"`` kernels (power of two >= 8).
      neg_block: negative ids per step of the ``sharing="block"`` kernels (power of two >= 16).
      num_warps: Triton warps per program.
      num_stages: Triton pipeline stages (None: Triton's default).
    """

    block_rows: int = 128
    row_block: int | None = None
    neg_block: int | None = None
    num_warps: int | None = None
    num_stages: int | None = None

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None and f.name != "block_rows":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"SampledConfig.{f.name}={value!r} must be a positive int"
                                 + ("" if f.name == "block_rows" else " or None"))


def get_default(n: int, v: int, d: int, dtype=jnp.bfloat16,
                block_rows: int = 128) -> SampledConfig:
    """The tiles the Pallas kernels use for width ``d`` and the inputs' ``dtype`` (``n`` and ``v``
    do not change them today): ``default_row_block``, ``default_neg_block``, ``default_num_warps``."""
    del n, v
    return SampledConfig(block_rows=block_rows, row_block=default_row_block(d),
                         neg_block=default_neg_block(d, jnp.dtype(dtype).itemsize),
                         num_warps=default_num_warps(d),
                         num_stages=None)


@dataclasses.dataclass(frozen=True)
class Static:
    """What one call's kernels are specialised on (hashable; a jit / custom_vjp static)."""

    num_negatives: int
    num_items: int
    sampler: str  # "uniform" | "popularity"
    sharing: str  # "row" | "block"
    block_rows: int  # rows that share one negative set when sharing == "block"
    impl: str  # "xla" | "pallas"
    interpret: bool = False
    row_block: int = 8  # Pallas row tile for row sharing
    neg_block: int = 64  # Pallas negatives per step for shared negatives
    num_warps: int | None = None  # None: default_num_warps(D)
    num_stages: int | None = None
