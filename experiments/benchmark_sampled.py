"""Benchmark CCE- (``sampled_linear_cross_entropy``) against the gather bound.

Rows: forward and forward+backward time (median wall clock over ``--reps`` runs after a warm-up,
``block_until_ready``, a fresh traced seed each run; and, as ``*_queued_ms``, the time per call of
``--reps`` calls queued back to back, without the host's per-call wait), and XLA's compiled memory analysis
(``temp`` = scratch beyond inputs/outputs; ``out`` = outputs, i.e. the gradients for fwd+bwd).
Bound for ``sharing="row"``: gathering ``N (n+1) D`` embedding values three times (forward,
backward dE, backward dC) at the measured device copy bandwidth (bytes read + written / time).

  python -m experiments.benchmark_sampled --d 64 128 256 --sharing row block --out results.json

Only the public API of ``pallas_kernels`` is used (``SampledConfig`` for the tiles).
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments.benchmark_loss import make_inputs
from pallas_kernels import SampledConfig, popularity_table, sampled_linear_cross_entropy
from pallas_kernels.cce_neg.config import get_default
from srs_jax.atomic_files import write_json_atomic

# Reference CCE- (MemoryEfficientSRS, fp16, H100) at N=131072, n+1=512 (docs/performance.md).
SRS_FWD_BWD_MS = {64: 28.7, 128: 49.3, 256: 100.1}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-rows", type=int, default=131072)
    p.add_argument("--num-items", type=int, default=1_000_000)
    p.add_argument("--num-negatives", type=int, default=511, help="n (n+1 samples with the positive)")
    p.add_argument("--d", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--sharing", nargs="+", default=["row", "block"])
    p.add_argument("--sampler", default="uniform")
    p.add_argument("--impl", default="pallas", help="pallas, interpret (CPU smoke test) or xla")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--block-rows", type=int, default=128)
    p.add_argument("--row-block", type=int, default=None,
                   help="default: by D (16 for D <= 64, else 8)")
    p.add_argument("--neg-block", type=int, default=None,
                   help="default: by D (32 up to D = 128, else 64)")
    p.add_argument("--num-warps", type=int, default=None)
    p.add_argument("--num-stages", type=int, default=None)
    p.add_argument("--copy-gib", type=float, default=2.0)
    p.add_argument("--masked-frac", type=float, default=0.0,
                   help="fraction of rows with where=False (padding in training batches)")
    p.add_argument("--out", default=None, help="JSON file (written atomically)")
    return p.parse_args(argv)


def _median_ms(fn, args_for_rep, reps):
    """(median ms of ``reps`` single calls, each waited for; their list; ms per call of ``reps``
    calls queued back to back and waited for once). A single call's wall clock includes the
    host's dispatch and wait, which a training loop overlaps with the previous step; the queued
    time leaves it out (it matters for the sub-millisecond shared-negative kernels)."""
    jax.block_until_ready(fn(*args_for_rep(0)))  # compile + warm-up
    times = []
    for r in range(reps):
        a = args_for_rep(r + 1)
        jax.block_until_ready(a)
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*a))
        times.append((time.perf_counter() - t0) * 1e3)
    queued = [args_for_rep(reps + 1 + r) for r in range(reps)]
    jax.block_until_ready(queued)
    jax.block_until_ready([fn(*a) for a in queued])  # the allocator grows to hold reps outputs
    t0 = time.perf_counter()
    jax.block_until_ready([fn(*a) for a in queued])
    return statistics.median(times), times, (time.perf_counter() - t0) * 1e3 / reps


def copy_bandwidth(nbytes: int = 4 << 30, reps: int = 10) -> float:
    """Device copy bandwidth in bytes/s, counting bytes read plus bytes written.

    ``reps`` back-to-back copies are queued and waited for once, so dispatch gaps are hidden.
    """
    x = jax.random.normal(jax.random.key(0), (nbytes // 4,), jnp.float32)
    f = jax.jit(lambda a: a * 1.0000001)
    jax.block_until_ready(f(x))
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        ys = [f(x) for _ in range(reps)]
        jax.block_until_ready(ys)
        best = min(best, (time.perf_counter() - t0) / reps)
        del ys
    return 2 * nbytes / best


def _mem(compiled):
    m = compiled.memory_analysis()
    if m is None:
        return {}
    return {"temp_mib": m.temp_size_in_bytes / 2**20, "out_mib": m.output_size_in_bytes / 2**20}


def cases(args) -> list[dict]:
    """One dict per (D, sharing): timings, memory, bound and ratios."""
    dtype = jnp.dtype(args.dtype)
    bw = copy_bandwidth(int(args.copy_gib * 2**30))
    rows = []
    n, n_rows, v = args.num_negatives, args.n_rows, args.num_items
    for d in args.d:
        e, c, t = make_inputs(n_rows, v, d, dtype, seed=d)
        kt = jax.random.split(jax.random.key(d), 3)[2]  # (the targets' key: the row mask's too)
        where = None
        if args.masked_frac > 0:
            where = jax.random.uniform(jax.random.fold_in(kt, 1), (n_rows,)) >= args.masked_frac
        table = None
        if args.sampler == "popularity":
            table = popularity_table(np.random.default_rng(0).zipf(1.2, size=v).clip(max=10**6))
        elif args.sampler != "uniform":
            raise SystemExit(f"--sampler {args.sampler!r}: choose uniform or popularity")
        bound_ms = 3 * n_rows * (n + 1) * d * dtype.itemsize / bw * 1e3
        config = SampledConfig(block_rows=args.block_rows, row_block=args.row_block,
                               neg_block=args.neg_block, num_warps=args.num_warps,
                               num_stages=args.num_stages)
        tiles = get_default(n_rows, v, d, dtype, block_rows=args.block_rows)
        for sharing in args.sharing:
            kw = dict(num_negatives=n, sampler=table, sharing=sharing, impl=args.impl,
                      config=config)
            loss = lambda e_, c_, s: sampled_linear_cross_entropy(e_, c_, t, seed=s, where=where, **kw)
            fwd = jax.jit(loss)
            fwd_bwd = jax.jit(jax.value_and_grad(loss, (0, 1)))
            seeds = lambda r: (e, c, jnp.int32(1000 + r))
            row = dict(d=d, sharing=sharing, n_rows=n_rows, num_negatives=n, num_items=v,
                       dtype=str(dtype), sampler=args.sampler, impl=args.impl,
                       masked_frac=args.masked_frac, block_rows=args.block_rows,
                       row_block=args.row_block or tiles.row_block,
                       neg_block=args.neg_block or tiles.neg_block,
                       num_warps=args.num_warps or tiles.num_warps, num_stages=args.num_stages)
            try:
                row["fwd_ms"], row["fwd_all_ms"], row["fwd_queued_ms"] = _median_ms(
                    fwd, seeds, args.reps)
                row["fwd_bwd_ms"], row["fwd_bwd_all_ms"], row["fwd_bwd_queued_ms"] = _median_ms(
                    fwd_bwd, seeds, args.reps)
                row.update(_mem(fwd_bwd.lower(*seeds(0)).compile()))
            except Exception as err:  # keep the other rows of a sweep
                row["error"] = f"{type(err).__name__}: {str(err)[:300]}"
            row["copy_bw_gbs"] = bw / 1e9
            row["gather_bound_ms"] = bound_ms
            if "fwd_bwd_ms" in row:
                row["x_bound"] = row["fwd_bwd_ms"] / bound_ms
                if d in SRS_FWD_BWD_MS and n == 511 and n_rows == 131072:
                    row["speedup_vs_srs"] = SRS_FWD_BWD_MS[d] / row["fwd_bwd_ms"]
            print(json.dumps({k: (round(x, 3) if isinstance(x, float) else x)
                              for k, x in row.items() if not k.endswith("_all_ms")}), flush=True)
            rows.append(row)
    return rows


def main(argv=None):
    args = parse_args(argv)
    rows = cases(args)
    meta = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                device=str(jax.devices()[0].device_kind), jax=jax.__version__,
                python=sys.version.split()[0], argv=sys.argv)
    if args.out:
        write_json_atomic(args.out, {"meta": meta, "rows": rows}, indent=1)
    print(f"{'D':>4} {'sharing':>7} "
          f"{'fwd ms':>8} {'f+b ms':>8} {'fwd q':>7} {'f+b q':>7} {'bound':>7} {'x bnd':>6} {'vs SRS':>7} {'temp MiB':>9}")
    for r in rows:
        print(f"{r['d']:>4} {r['sharing']:>7} "
              f"{r.get('fwd_ms', float('nan')):8.2f} {r.get('fwd_bwd_ms', float('nan')):8.2f} "
              f"{r.get('fwd_queued_ms', float('nan')):7.2f} "
              f"{r.get('fwd_bwd_queued_ms', float('nan')):7.2f} "
              f"{r['gather_bound_ms']:7.2f} {r.get('x_bound', float('nan')):6.2f} "
              f"{r.get('speedup_vs_srs', float('nan')):7.2f} "
              f"{r.get('temp_mib', float('nan')):9.1f} {r.get('error', '')}")


if __name__ == "__main__":
    main()
