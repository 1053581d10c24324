"""Experimental CCE forward for Hopper in Pallas Mosaic GPU: warp-specialised ping-pong.

Why: the Triton forward runs at the *sum* of its GEMM and exponential times (docs/perf.md). Here
each CTA has three warpgroups: one streams catalog tiles ``[block_v, D]`` into shared memory with
TMA (``slots`` buffers), two compute warpgroups each own ``block_n`` rows of E and alternate:
while one issues its logit GEMM on the tensor cores, the other runs its online max / sum of
exponentials, enforced by a two-party "schedule" barrier met twice per step (FlashAttention-3's
schedule, without the PV GEMM).

Inputs are padded by the caller: rows to a multiple of ``2 * block_n``, catalog rows to a multiple
of ``block_v`` (zero rows; the columns >= V of the last step are masked to -inf). D must be a
multiple of 64, dtype bf16/f16. Output: float32 [Np] log2-domain LSE (as ``forward.lse_rows``
before its LN2 scaling). GPU only (Hopper); needs a jax with ``plgpu.Layout.WGMMA.reduce``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

LOG2E = math.log2(math.e)


def lse2_rows(e_pad, c_pad, v: int, *, block_n: int = 64, block_v: int = 128, slots: int = 4,
              interpret: bool = False, shift2=None, shift_load: str = "gmem"):
    """log2-domain LSE float32 [Np] of e_pad [Np, D] against the first V rows of c_pad [Vp, D].

    ``shift2`` (float32 [Np], log2 domain, <= each row's max, e.g. its target logit): exponentials
    relative to it, summed as a [block_n, block_v] tile (no running max, no per-step reductions),
    as the Triton forward's ``fwd_shift="target"``; ``shift_load``: "gmem" (load the rows' shifts
    straight into the row layout) or "smem" (TMA to shared memory first)."""
    from jax.experimental.pallas import mosaic_gpu as plgpu

    n_pad, d = e_pad.shape
    v_pad = c_pad.shape[0]
    if n_pad % (2 * block_n) or v_pad % block_v or d % 64 or v_pad < v:
        raise ValueError(f"forward_mgpu needs rows % {2 * block_n} == 0, catalog rows % {block_v}"
                         f" == 0 and D % 64 == 0; got {e_pad.shape}, {c_pad.shape}")
    dtype = e_pad.dtype
    n_steps = v_pad // block_v
    slots = max(1, min(slots, n_steps))
    tail_cols = v - (n_steps - 1) * block_v  # valid columns of the last step (1..block_v)

    shifted = shift2 is not None

    def kernel(e_ref, c_ref, shift_ref, lse_ref, scoped):
        (e_smem2, c_smem, lse_smem2), (c_ready, e_ready), c_free, schedule = scoped
        wg = lax.axis_index("wg")

        def meet():  # both compute warpgroups
            plgpu.barrier_arrive(schedule)
            plgpu.barrier_wait(schedule)

        @pl.when(wg < 2)
        def _compute():
            plgpu.set_max_registers(232, action="increase")
            e_smem, lse_smem = e_smem2.at[wg], lse_smem2.at[wg]
            base = lax.axis_index("rows") * (2 * block_n) + wg * block_n
            plgpu.copy_gmem_to_smem(e_ref.at[pl.ds(base, block_n)], e_smem, e_ready.at[wg])
            plgpu.barrier_wait(e_ready.at[wg])
            row_layout = plgpu.Layout.WGMMA.reduce(1)
            if shifted:
                if shift_load == "smem":
                    plgpu.copy_gmem_to_smem(shift_ref.at[pl.ds(base, block_n)], lse_smem,
                                            e_ready.at[wg])
                    plgpu.barrier_wait(e_ready.at[wg])
                    sh = plgpu.load(lse_smem, (), layout=row_layout, optimized=False)
                else:
                    sh = plgpu.load(shift_ref, pl.ds(base, block_n), layout=row_layout,
                                    optimized=False)
                m = sh
                s = plgpu.layout_cast(jnp.full((block_n, block_v), 0.0, jnp.float32),
                                      plgpu.Layout.WGMMA)
            else:
                m = plgpu.layout_cast(jnp.full((block_n,), -jnp.inf, jnp.float32), row_layout)
                s = plgpu.layout_cast(jnp.full((block_n,), 0.0, jnp.float32), row_layout)
            pl.when(wg == 1)(meet)  # offset the two warpgroups by one phase

            def step(j, carry, last: bool = False):
                m, s = carry
                slot = lax.rem(j, jnp.array(slots, j.dtype))
                plgpu.barrier_wait(c_ready.at[slot])

                def logits(acc_ref):
                    plgpu.wgmma(acc_ref, e_smem, c_smem.at[slot].transpose((1, 0)))
                    meet()  # the other warpgroup's exponentials run during this GEMM
                    return acc_ref[...]

                x = pl.run_scoped(logits, plgpu.ACC((block_n, block_v), jnp.float32))
                plgpu.barrier_arrive(c_free.at[slot])
                if last:
                    cols = plgpu.broadcasted_iota(jnp.int32, (block_n, block_v), 1,
                                                  layout=plgpu.Layout.WGMMA)
                    x = jnp.where(cols < tail_cols, x, -jnp.inf)
                if shifted:  # m is the fixed shift; s a tile: one FMA, one ex2, one add per logit
                    s = s + jnp.exp2(x * LOG2E - lax.broadcast_in_dim(m, x.shape, [0]))
                    meet()
                    return m, s
                # m, s in the log2 domain: one FMA per logit before exp2.
                m_new = jnp.maximum(m, x.max(axis=1) * LOG2E)
                p = jnp.exp2(x * LOG2E - lax.broadcast_in_dim(m_new, x.shape, [0]))
                s = s * jnp.exp2(m - m_new) + p.sum(axis=1)
                meet()  # done with the exponentials: the tensor cores are the other's now
                return m_new, s

            m, s = lax.fori_loop(0, n_steps - 1, step, (m, s))
            m, s = step(jnp.int32(n_steps - 1), (m, s), last=True)
            pl.when(wg == 0)(meet)
            if shifted:
                s = s.sum(axis=1)
            lse_smem[...] = m + jnp.log2(s)
            plgpu.commit_smem()
            plgpu.copy_smem_to_gmem(lse_smem, lse_ref.at[pl.ds(base, block_n)])
            plgpu.wait_smem_to_gmem(0)

        @pl.when(wg == 2)
        def _memory():
            plgpu.set_max_registers(40, action="decrease")
            for i in range(slots):
                plgpu.copy_gmem_to_smem(c_ref.at[pl.ds(i * block_v, block_v)], c_smem.at[i],
                                        c_ready.at[i])

            @pl.loop(0, n_steps - slots)
            def _(j):
                slot = lax.rem(j, jnp.array(slots, j.dtype))
                plgpu.barrier_wait(c_free.at[slot])
                plgpu.copy_gmem_to_smem(c_ref.at[pl.ds((j + slots) * block_v, block_v)],
                                        c_smem.at[slot], c_ready.at[slot])

    def entry(e_ref, c_ref, *refs):
        shift_ref, lse_ref = refs if shifted else (None, refs[0])
        transforms = (plgpu.TilingTransform((8, 64)), plgpu.SwizzleTransform(128))
        pl.run_scoped(
            lambda *scoped: kernel(e_ref, c_ref, shift_ref, lse_ref, scoped),
            (plgpu.SMEM((2, block_n, d), dtype, transforms=transforms),
             plgpu.SMEM((slots, block_v, d), dtype, transforms=transforms),
             plgpu.SMEM((2, block_n), jnp.float32)),
            (plgpu.Barrier(num_barriers=slots), plgpu.Barrier(num_barriers=2)),
            plgpu.Barrier(num_arrivals=2, num_barriers=slots),
            plgpu.Barrier(num_arrivals=2),
            collective_axes="wg",
        )

    import inspect

    out = jax.ShapeDtypeStruct((n_pad,), jnp.float32)
    # jax 0.11 names the outputs ``out_type``; 0.10 ``out_shape``.
    out_kw = "out_type" if "out_type" in inspect.signature(plgpu.kernel).parameters else "out_shape"
    return plgpu.kernel(
        entry,
        **{out_kw: out},
        grid=(n_pad // (2 * block_n),),
        grid_names=("rows",),
        num_threads=3,
        thread_name="wg",
        compiler_params=plgpu.CompilerParams(approx_math=True),
        **({"interpret": True} if interpret else {}),
    )(e_pad, c_pad, *((shift2.astype(jnp.float32),) if shifted else ()))
