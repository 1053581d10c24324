"""``CCEConfig``: the few tile settings of the CCE kernels, and ``get_default``, their heuristic.

Every field left ``None`` is chosen from the problem's shapes by ``get_default(n, v, d, dtype)``;
a field that is set overrides only itself. Warps, pipeline stages and the other launch details
belong to the tile table of ``common.py`` and are not settings.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from pallas_kernels.cce import common

_FWD_IMPLS = ("triton", "mosaic")


@dataclasses.dataclass(frozen=True)
class CCEConfig:
    """Tiles of the CCE kernels (powers of two) and the forward's implementation.

    Attributes:
      block_n, block_v: rows x catalog columns per tile of the differentiated path (the
        one-pass forward that also accumulates the softmax-weighted classifier rows, and the
        dC / dE backward kernels). With ``impl="xla"``: the row x catalog chunk of the chunked
        pure-JAX path (default 4096 x 2048), the largest float32 temporary.
      fwd_block_n, fwd_block_v: tiles of the undifferentiated forward (evaluation, and
        ``linear_cross_entropy_fwd``). When ``None`` but ``block_n`` / ``block_v`` are set,
        those are used (Triton forward only); else the default. With the Mosaic forward: rows
        per compute warpgroup and catalog tile of that kernel.
      num_splits: catalog splits per row tile of the undifferentiated Triton forward (small
        batches fill the GPU by splitting the catalog).
      fwd_impl: "triton" or "mosaic" (Hopper, bf16/f16, D a multiple of 64, V of 8; the Triton
        forward runs where it does not apply).
      max_chunk_rows: catalog rows per kernel launch. Launches address the table with 32-bit
        offsets, so catalogs with V x D >= 2^31 always run as several chunks whose
        log-sum-exps are merged; this caps the chunk further (tests).
    """

    block_n: int | None = None
    block_v: int | None = None
    fwd_block_n: int | None = None
    fwd_block_v: int | None = None
    num_splits: int | None = None
    fwd_impl: str | None = None
    max_chunk_rows: int | None = None

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "fwd_impl":
                if value is not None and value not in _FWD_IMPLS:
                    raise ValueError(f"CCEConfig.fwd_impl={value!r} must be one of {_FWD_IMPLS} "
                                     f"or None")
                continue
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value <= 0):
                raise ValueError(f"CCEConfig.{f.name}={value!r} must be a positive int or None")
            if (value is not None and f.name not in ("num_splits", "max_chunk_rows")
                    and value & (value - 1)):
                raise ValueError(f"CCEConfig.{f.name}={value} must be a power of two (the "
                                 f"kernels load power-of-two tiles)")


def get_default(n: int, v: int, d: int, dtype=jnp.bfloat16) -> CCEConfig:
    """The tiles the Pallas path uses for ``n`` rows, ``v`` items, width ``d`` and ``dtype``.

    Heuristic (``common.default_plan``): tiles by the bytes of one row (float32 rows count as
    bf16 rows twice as long) from a table measured on H100 / H200 GPUs (docs/kernels.md); the
    forward splits the catalog over up to 8 programs per row tile when there are fewer row
    tiles than two per SM; the Mosaic GPU forward at D = 128 and 256 (bf16/f16, V a multiple
    of 8, at least one CTA per SM, a Hopper GPU with jax >= 0.11), else the Triton one.
    """
    plan = common.default_plan(n, v, d, jnp.dtype(dtype).itemsize)
    mosaic = plan.fwd_impl == "mosaic"
    return CCEConfig(block_n=plan.bwd_block_n, block_v=plan.bwd_block_v,
                     fwd_block_n=plan.mosaic_block_n if mosaic else plan.fwd_block_n,
                     fwd_block_v=plan.mosaic_block_v if mosaic else plan.fwd_block_v,
                     num_splits=plan.num_splits, fwd_impl=plan.fwd_impl, max_chunk_rows=None)


def resolve(config: CCEConfig | None, n: int, v: int, d: int, itemsize: int) -> common.KernelPlan:
    """The full kernel plan: the defaults for the shapes with the fields ``config`` sets."""
    plan = common.default_plan(n, v, d, itemsize)
    if config is None:
        return plan
    c = config
    changes = {}
    if c.block_n is not None:
        changes.update(bwd_block_n=c.block_n, fde_block_n=c.block_n)
    if c.block_v is not None:
        changes.update(bwd_block_v=c.block_v, fde_block_v=c.block_v)
    if c.num_splits is not None:
        changes.update(num_splits=c.num_splits)
    if c.fwd_impl is not None and c.fwd_impl != plan.fwd_impl:
        changes.update(common.mosaic_tiles_for(d) if c.fwd_impl == "mosaic" else {})
        changes.update(fwd_impl=c.fwd_impl)
    mosaic = changes.get("fwd_impl", plan.fwd_impl) == "mosaic"
    # block_n / block_v stand in for the Triton forward's tiles, not for the Mosaic kernel's.
    fwd_n = c.fwd_block_n if c.fwd_block_n is not None or mosaic else c.block_n
    fwd_v = c.fwd_block_v if c.fwd_block_v is not None or mosaic else c.block_v
    if fwd_n is not None:
        changes.update({"mosaic_block_n" if mosaic else "fwd_block_n": fwd_n})
    if fwd_v is not None:
        changes.update({"mosaic_block_v" if mosaic else "fwd_block_v": fwd_v})
    return dataclasses.replace(plan, **changes)
