"""Static (hashable) configuration shared by the CCE- implementations."""

from __future__ import annotations

import dataclasses

DC_ACCUMS = ("float32", "bfloat16")  # dtypes of the atomically accumulated dC buffer


def pow2(x: int) -> bool:
    return x > 0 and x & (x - 1) == 0


def triton_width_ok(d: int) -> bool:
    """Whether the Triton kernels take rows of width D (a power of two >= 16)."""
    return pow2(d) and d >= 16


def default_row_block(d: int) -> int:
    """Row tile of the row-sharing kernels. H100, N = 131072, n = 511, V = 10^6 (ninth session
    sweep, docs/perf_sampled.md): at D = 64 the forward gathers at the copy bandwidth with 16
    rows x 4 warps (2.7 ms) and not with 8 x 4 (4.1 ms); the backward does not care; D >= 128
    is fastest with 8."""
    return 16 if d <= 64 else 8


def default_neg_block(d: int) -> int:
    """Ids per step of the shared-negative (block / batch) kernels. H100, N = 131072, n = 511,
    V = 10^6, f+b (docs/perf_sampled.md): 32 ids up to D = 128 (D = 128: block 1.19-1.20 ms
    against 1.53 with 64; D = 64, with the target-shifted forward: 0.58 ms queued against 0.67);
    at D = 256, 64 ids with 8 warps (2.19 ms; 32 x 4: 3.23)."""
    return 32 if d <= 128 else 64


@dataclasses.dataclass(frozen=True)
class Static:
    num_negatives: int
    num_items: int
    sampler: str  # "uniform" | "popularity"
    sharing: str  # "row" | "block" | "batch"
    block_rows: int  # rows that share one negative set when sharing == "block"
    impl: str  # "xla" | "pallas"
    interpret: bool = False
    xla_block_rows: int = 128  # row chunk of the XLA path (row/batch sharing)
    row_block: int = 8  # Pallas row tile for row sharing
    neg_block: int = 64  # Pallas negatives per step for shared negatives
    num_warps: int | None = None
    num_stages: int | None = None
    dc_accum: str = "float32"  # dtype of the atomically accumulated dC buffer (Pallas)
    # Row-sharing backward: items per dC partition (0: one fused kernel, no partitioning) and
    # the row tile of the partitioned scatter kernel.
    dc_part_items: int = 0
    scatter_rows: int = 8
    # Uniform row sharing: "independent" (hash per (row, slot), atomic dC) or "permutation"
    # (ids invertible per slot: atomic-free dC); sampling.py. dc_block: items per program of
    # the permutation's dC kernel.
    row_sampling: str = "independent"
    dc_block: int = 16
    # Memory ordering of the dC atomic adds (pallas_kernels/atomics.py): "relaxed" or "acq_rel".
    atomics: str = "relaxed"
    # Programs of the one-pass row kernel's persistent grid (fused.py; 0: its DEFAULT_PROGRAMS).
    # Whether that kernel runs is decided by the API (api._use_fused), not stored here.
    fused_programs: int = 0
