"""Hopper CCE forward in Pallas Mosaic GPU: warp-specialised, target-shifted log-sum-exp.

Why a second forward: the Triton forward (``forward.py``) runs each program's logit GEMM and its
exponentials one after the other, so at D >= 128 it takes about the sum of the two
(docs/decisions/001). Here each CTA has one warpgroup that streams catalog tiles ``[block_v, D]``
into a ring of ``slots`` shared-memory buffers with TMA, and ``compute_wgs`` (default two)
compute warpgroups owning ``block_n`` rows each. With ``pingpong`` the two meet at a barrier
twice per step, so that one issues its logit GEMM on the tensor cores while the other runs its
exponentials (FlashAttention-3's schedule, without the PV GEMM). With ``lhs_regs`` the rows'
embeddings stay in registers as the GEMM's A operand, so each step reads only the catalog tile
from shared memory (what brought D = 128 under 60 ms on an H100).

Same arithmetic as the target-shifted Triton forward: each row's exponentials are
taken relative to a fixed shift (its target logit, at most its max) and summed as a
``[block_n, block_v]`` float32 tile, one FMA + one ex2 + one add per logit, reduced once at the
end. A row whose sum overflows comes back as inf and ``ops`` redoes the batch with the
running-max Triton kernel, as for the Triton forward.

Layout: rows are padded by the caller to a multiple of ``compute_wgs * block_n``. The catalog is not
padded: a ragged last tile comes from a separate [block_v, D] copy of the last V % block_v rows
(zero rows after them, their columns masked to -inf), since the TMA copies into tiled shared
memory need tile-aligned starts. Mosaic views the table in tiles of 8 rows, so V must be a
multiple of 8 (``ops`` takes the Triton forward otherwise). D must be a multiple of 64
(128-byte swizzle), inputs bf16 or f16.

``interpret=True`` runs the kernel in jax's Mosaic GPU interpreter on CPU (race detection on;
its parameters class is private, ``jax._src.pallas.mosaic_gpu.interpret``, in jax 0.10-0.11):
the same barriers, ring, masking and arithmetic, but without the GPU-only layout hints, with
the catalog tile stored transposed (the interpreter's wgmma takes no transposed operand) and
the E operand always in shared memory.
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from pallas_kernels.cce.common import LN2, LOG2E


def supported(v: int, d: int, dtype) -> bool:
    """Whether this kernel handles V, D and dtype (the caller still needs a Hopper GPU)."""
    return (v % 8 == 0 and d % 64 == 0 and d <= 256
            and jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)))


def _interpret_params(interpret):
    if interpret is True:
        from jax._src.pallas.mosaic_gpu.interpret.params import InterpretGPUParams
        return InterpretGPUParams(detect_races=True)
    return interpret


def lse_rows(e_pad, c, shift, *, block_n: int = 64, block_v: int = 64, slots: int = 3,
             lhs_regs: bool = False, pingpong: bool = True, compute_wgs: int = 2,
             interpret=False):
    """Natural-log LSE float32 [Np] of e_pad [Np, D] against every row of c [V, D].

    ``shift``: float32 [Np], natural-log units, at most each row's max logit (the target
    logit); the result is ``shift + log(sum_v exp(e . c_v - shift))``, inf where that sum
    overflows float32. ``lhs_regs``: keep the E tile in registers for the GEMM (wgmma with A
    in registers) instead of reading it from shared memory every step. ``compute_wgs``: compute
    warpgroups per CTA (rows per CTA = compute_wgs * block_n); the ping-pong needs two."""
    from jax.experimental.pallas import mosaic_gpu as plgpu

    n_pad, d = e_pad.shape
    v = c.shape[0]
    if c.dtype != e_pad.dtype or not supported(v, d, e_pad.dtype):
        raise ValueError(f"forward_mosaic takes bf16/f16 with V % 8 == 0, D % 64 == 0, D <= 256; "
                         f"got {e_pad.dtype}/{c.dtype}, V={v}, D={d}: use the Triton forward")
    if compute_wgs not in (1, 2, 3) or (pingpong and compute_wgs != 2):
        raise ValueError(f"forward_mosaic: compute_wgs={compute_wgs} must be 1-3, and 2 for the "
                         "ping-pong (pingpong=False otherwise)")
    cta_rows = compute_wgs * block_n
    if n_pad % cta_rows or block_n % 64 or block_v % 64:
        raise ValueError(f"forward_mosaic needs rows % {cta_rows} == 0 and block_n, block_v "
                         f"multiples of 64; got {e_pad.shape}, "
                         f"block_n={block_n}, block_v={block_v}")
    # Registers per thread: the producer keeps 40, the compute warpgroups share the rest of the
    # 64K (multiples of 8): 232 with two of them, 152 with three.
    compute_regs = min(232, (65536 // 128 - 40) // compute_wgs // 8 * 8)
    if slots == 2:
        # Measured on an H100 (jax 0.11.2): a ring of two reused buffers gives
        # wrong sums at D = 256 (max LSE error 1.7), with and without ping-pong, while 1, 3 and
        # 4 match float64 and the interpreter's race detector finds no race. Not explained, so
        # refused; it was never the fast choice.
        raise ValueError("forward_mosaic: slots=2 is refused (wrong sums measured at D = 256 on "
                         "an H100); use 1 or >= 3")
    interpret = _interpret_params(interpret)
    dtype = e_pad.dtype
    full_tiles, tail_cols = divmod(v, block_v)
    n_steps = full_tiles + (tail_cols > 0)
    slots = max(1, min(slots, n_steps))
    tail = [] if not tail_cols else [  # the ragged last tile, zero-padded: [block_v, D]
        jnp.pad(c[full_tiles * block_v:], ((0, block_v - tail_cols), (0, 0)))]
    shift2 = shift.astype(jnp.float32) * LOG2E

    def layout(x, lay):  # layout hints exist only for the compiled kernel
        return x if interpret else plgpu.layout_cast(x, lay)

    def kernel(e_ref, c_ref, tail_ref, shift_ref, lse_ref, scoped):
        (e_smem2, c_smem, lse_smem2), (c_ready, e_ready), c_free, schedule = scoped
        wg = lax.axis_index("wg")

        def load_tile(j, slot):  # catalog tile j into a ring slot (transposed when interpreted)
            def copy(src):
                plgpu.copy_gmem_to_smem(src, c_smem.at[slot], c_ready.at[slot])

            def from_table():
                rows = pl.ds(j * block_v, block_v)
                copy(c_ref.at[:, rows] if interpret else c_ref.at[rows])

            if tail_ref is None:
                from_table()
            elif isinstance(j, int):
                if j == full_tiles:
                    copy(tail_ref)
                else:
                    from_table()
            else:
                pl.when(j < full_tiles)(from_table)
                pl.when(j == full_tiles)(lambda: copy(tail_ref))

        def meet():  # the two compute warpgroups (ping-pong)
            plgpu.barrier_arrive(schedule)
            plgpu.barrier_wait(schedule)

        @pl.when(wg < compute_wgs)
        def _compute():
            plgpu.set_max_registers(compute_regs, action="increase")
            e_smem, lse_smem = e_smem2.at[wg], lse_smem2.at[wg]
            base = lax.axis_index("rows") * cta_rows + wg * block_n
            plgpu.copy_gmem_to_smem(e_ref.at[pl.ds(base, block_n)], e_smem, e_ready.at[wg])
            plgpu.barrier_wait(e_ready.at[wg])
            if interpret:
                sh = shift_ref[pl.ds(base, block_n)]
            else:
                sh = plgpu.load(shift_ref, pl.ds(base, block_n),
                                layout=plgpu.Layout.WGMMA.reduce(1), optimized=False)
            lhs = e_smem[...] if (lhs_regs and not interpret) else e_smem
            s = layout(jnp.zeros((block_n, block_v), jnp.float32), plgpu.Layout.WGMMA)
            if pingpong:
                pl.when(wg == 1)(meet)  # offset the two warpgroups by half a step

            def step(j, s, last: bool = False):
                slot = lax.rem(j, jnp.array(slots, j.dtype))
                plgpu.barrier_wait(c_ready.at[slot])
                rhs = c_smem.at[slot] if interpret else c_smem.at[slot].transpose((1, 0))

                def logits(acc_ref):
                    plgpu.wgmma(acc_ref, lhs, rhs)
                    if pingpong:
                        meet()  # the other warpgroup's exponentials run during this GEMM
                    return acc_ref[...]

                x = pl.run_scoped(logits, plgpu.ACC((block_n, block_v), jnp.float32))
                plgpu.barrier_arrive(c_free.at[slot])  # the GEMM has read the slot
                if last and tail_cols:  # the zero rows after the ragged tail
                    cols = (lax.broadcasted_iota(jnp.int32, x.shape, 1) if interpret else
                            plgpu.broadcasted_iota(jnp.int32, x.shape, 1,
                                                   layout=plgpu.Layout.WGMMA))
                    x = jnp.where(cols < tail_cols, x, -jnp.inf)
                s = s + jnp.exp2(x * LOG2E - lax.broadcast_in_dim(sh, x.shape, [0]))
                if pingpong:
                    meet()  # exponentials done: the tensor cores are the other's now
                return s

            s = lax.fori_loop(0, n_steps - 1, step, s)
            s = step(jnp.int32(n_steps - 1), s, last=True)
            if pingpong:
                pl.when(wg == 0)(meet)
            lse_smem[...] = (sh + jnp.log2(s.sum(axis=1))) * LN2
            plgpu.commit_smem()
            plgpu.copy_smem_to_gmem(lse_smem, lse_ref.at[pl.ds(base, block_n)])
            plgpu.wait_smem_to_gmem(0)

        @pl.when(wg == compute_wgs)
        def _memory():
            plgpu.set_max_registers(40, action="decrease")
            for i in range(slots):
                load_tile(i, i)

            @pl.loop(0, n_steps - slots)
            def _(j):
                slot = lax.rem(j, jnp.array(slots, j.dtype))
                plgpu.barrier_wait(c_free.at[slot])
                load_tile(j + slots, slot)

            # Observe the last frees too: every phase of a barrier is waited on by its waiter
            # (the interpreter checks it; on the GPU it only keeps the CTA alive until then).
            @pl.loop(n_steps - slots, n_steps)
            def _(j):
                plgpu.barrier_wait(c_free.at[lax.rem(j, jnp.array(slots, j.dtype))])

    def entry(e_ref, c_ref, *refs):
        tail_ref, shift_ref, lse_ref = refs if tail else (None, *refs)
        transforms = () if interpret else (plgpu.TilingTransform((8, 64)),
                                           plgpu.SwizzleTransform(128))
        c_shape = (slots, d, block_v) if interpret else (slots, block_v, d)
        pl.run_scoped(
            lambda *scoped: kernel(e_ref, c_ref, tail_ref, shift_ref, lse_ref, scoped),
            (plgpu.SMEM((compute_wgs, block_n, d), dtype, transforms=transforms),
             plgpu.SMEM(c_shape, dtype, transforms=transforms),
             plgpu.SMEM((compute_wgs, block_n), jnp.float32)),
            (plgpu.Barrier(num_barriers=slots), plgpu.Barrier(num_barriers=compute_wgs)),
            plgpu.Barrier(num_arrivals=compute_wgs, num_barriers=slots),
            plgpu.Barrier(num_arrivals=2),
            collective_axes="wg",
        )

    out = jax.ShapeDtypeStruct((n_pad,), jnp.float32)
    # jax 0.11 names the outputs ``out_type``; 0.10 still accepts ``out_shape`` (deprecated).
    out_kw = "out_type" if "out_type" in inspect.signature(plgpu.kernel).parameters else "out_shape"
    extra = {"interpret": interpret} if interpret else {
        "compiler_params": plgpu.CompilerParams(approx_math=True)}
    return plgpu.kernel(
        entry, **{out_kw: out}, grid=(n_pad // cta_rows,), grid_names=("rows",),
        num_threads=compute_wgs + 1, thread_name="wg", **extra,
    )(e_pad, *[x.T if interpret else x for x in [c, *tail]], shift2)
