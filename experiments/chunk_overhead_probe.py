"""Probe: f+b time of the CCE kernels with the catalog cut into 1 or 2 launches (``max_chunk_rows``),
and the large copies XLA adds around the chunked launches (from the compiled HLO).

  python3 -m experiments.chunk_overhead_probe --v 2000000 --d 256 --out-hlo /tmp/hlo.txt
"""

from __future__ import annotations

import argparse
import json
import re

import jax
import jax.numpy as jnp

from experiments.benchmark_loss import make_inputs, median_ms
from pallas_kernels.cce import ops
from pallas_kernels.cce.common import KernelConfig


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=131072)
    p.add_argument("--v", type=int, default=2_000_000)
    p.add_argument("--d", type=int, default=256)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--out-hlo", default=None, help="write the 2-chunk compiled HLO here")
    p.add_argument("--config", default="{}", help="JSON KernelConfig fields")
    p.add_argument("--interpret", action="store_true", help="Pallas interpreter (CPU smoke test)")
    args = p.parse_args(argv)
    e, c, t = make_inputs(args.n, args.v, args.d, jnp.bfloat16)
    valid = jnp.ones((args.n,), bool)
    cfg = KernelConfig(**json.loads(args.config))
    for rows in (None, -(-args.v // 2)):
        loss = lambda e_, c_: jnp.mean(ops.pallas_row_losses(
            e_, c_, t, valid, max_chunk_rows=rows, interpret=args.interpret, config=cfg))
        f = jax.jit(jax.value_and_grad(loss, (0, 1)))
        ms = median_ms(f, (e, c), args.reps)[0]
        compiled = f.lower(e, c).compile()
        hlo = compiled.as_text()
        big = [line.strip()[:160] for line in hlo.splitlines()
               if re.search(r"= (bf16|f32)\[[0-9]{6,}", line) and ("copy" in line or "fusion" in line
                                                               or "concatenate" in line)]
        mem = compiled.memory_analysis()
        print(f"{args.config} chunks={len(ops.catalog_chunks(args.v, args.d, rows))} f+b {ms:.1f} ms "
              f"temp {mem.temp_size_in_bytes / 2**20:.0f} MiB; large ops: {len(big)}", flush=True)
        for line in big[:12]:
            print("   ", line, flush=True)
        if rows is not None and args.out_hlo:
            with open(args.out_hlo, "w") as fh:
                fh.write(hlo)


if __name__ == "__main__":
    main()
