"""Time each CCE Pallas kernel on its own: where the fwd+bwd time goes.

For N x V x D (bf16, random E, C ~ N(0, 1) / D^(1/4), as ``benchmark_loss``) and each named
KernelConfig variant: the target-shifted LSE forward, the fused forward (LSE plus
sum_v softmax_rv c_v, ``fused_de``), the dE kernel and the dC kernel of the backward, each a
median of ``--reps`` runs after a warm-up. Prints one JSON line per (D, variant) and writes them.

  python -m experiments.benchmark_cce_parts --d 64 128 256
  python -m experiments.benchmark_cce_parts --d 128 --variants '{"a": {}, "b": {"fde_warps": 8}}'
"""

from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp

from experiments.benchmark_loss import make_inputs, median_ms, parse_variants
from pallas_kernels.cce import backward, common, forward, ops, reference
from pallas_kernels.cce.common import KernelConfig
from srs_jax.atomic_files import write_json_atomic


def parts(e, c, t, cfg: KernelConfig, interpret: bool):
    """{name: jitted fn of (e, c, t)} for the four kernels with the inputs ``ops`` gives them."""
    n, d = e.shape
    v = c.shape[0]
    cfg = ops.resolve_config(n, v, d, config=cfg, itemsize=e.dtype.itemsize)

    def prep(e_, c_, t_):
        e_pad, c_pad = ops._padded(e_, c_, cfg)
        n_pad = e_pad.shape[0]
        z_t = reference.target_logits(e_, c_, t_, jnp.ones(t_.shape, bool))
        z_t = ops._pad_vec(z_t, n_pad, 0.0)
        return e_pad, c_pad, n_pad, z_t

    def lse(e_, c_, t_):
        e_pad, c_pad, _, z_t = prep(e_, c_, t_)
        return forward.lse_rows(e_pad, c_pad, v, cfg, interpret=interpret, shift=z_t)

    def fused(e_, c_, t_):
        e_pad, c_pad, _, z_t = prep(e_, c_, t_)
        return forward.lse_rows(e_pad, c_pad, v, cfg, interpret=interpret, shift=z_t,
                                with_acc=True)

    def grads(want_de):
        def f(e_, c_, t_):
            e_pad, c_pad, n_pad, z_t = prep(e_, c_, t_)
            lse2 = (z_t + 14.0) * common.LOG2E  # any finite LSE: the work does not depend on it
            g = jnp.full((n_pad,), 1.0 / n, jnp.float32)
            tt = ops._pad_vec(t_, n_pad, -1)
            de, dc = backward.grads(e_pad, c_pad, v, lse2, tt, g, cfg, interpret=interpret,
                                    de_dtype=jnp.float32, onehot=False, want_de=want_de)
            return dc if de is None else (de, dc)
        return f

    return {"lse_fwd": lse, "fused_fwd": fused, "dc_kernel": grads(False),
            "de_and_dc_kernels": grads(True)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=131072)
    p.add_argument("--v", type=int, default=1_000_000)
    p.add_argument("--d", type=int, nargs="+", default=[128])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--variants", default='{"default": {}}',
                   help="JSON {name: {KernelConfig field: value}}")
    p.add_argument("--parts", nargs="+", default=None,
                   help="time only these (lse_fwd fused_fwd dc_kernel de_and_dc_kernels)")
    p.add_argument("--interpret", action="store_true", help="Pallas interpreter (CPU smoke test)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    variants = parse_variants(args.variants)
    rows = []
    for d in args.d:
        e, c, t = make_inputs(args.n, args.v, d, jnp.bfloat16)
        for name, cfg in variants.items():
            row = dict(variant=name, n=args.n, v=args.v, d=d, device=jax.devices()[0].device_kind)
            for part, fn in parts(e, c, t, cfg, args.interpret).items():
                if args.parts is None or part in args.parts:
                    row[f"{part}_ms"] = round(median_ms(jax.jit(fn), (e, c, t), args.reps)[0], 2)
            if "de_and_dc_kernels_ms" in row and "dc_kernel_ms" in row:
                row["dE_kernel_ms (difference)"] = round(row["de_and_dc_kernels_ms"]
                                                         - row["dc_kernel_ms"], 2)
            print(json.dumps(row), flush=True)
            rows.append(row)
    if args.out:
        write_json_atomic(args.out, rows)


if __name__ == "__main__":
    main()
