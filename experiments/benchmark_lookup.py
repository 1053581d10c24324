"""Input embedding lookup from a vocab-sharded item table: XLA's partitioned gather vs shard_map.

Times, on a ``(data, vocab)`` mesh over all visible devices, ``table[ids]`` with ``table [R, H]``
sharded by rows over ``vocab`` and ``ids int32[B, L]`` by rows over ``data``:

* ``xla``: the models' own gather ``table[ids]``, partitioned by XLA (``config.mesh.lookup='xla'``);
* ``shard_map``: ``srs_jax.distributed.sharded_lookup`` (``config.mesh.lookup='shard_map'``).

For each: ``fwd`` (the lookup alone) and ``fwd_bwd`` (``value_and_grad`` in the table of
``sum(lookup * cotangent)``, the gradient left sharded like the table), jitted, median of
``--reps`` calls after ``--warmup`` calls, each ``block_until_ready``. Also per variant: compile
seconds, XLA's compiled memory analysis (per device), the collectives in the compiled HLO, and
that the two variants agree (forward bit for bit, gradient to float rounding). ``peak_bytes`` is
each device's ``memory_stats()['peak_bytes_in_use']`` after the whole run (None on CPU; the peak
is over the process, so run ``--impls`` one at a time to see each alone). Ids are uniform over
``[0, items]`` (0 = padding row); rows are padded to a multiple of lcm(vocab, 8) as the trainer
pads them.

  # GPU, 2 GPUs on vocab (data 1 x vocab 2), Zvuk shape, float32 table (the trainer's params):
  python -m experiments.benchmark_lookup --vocab 2 --out $OUT/lookup_2gpu.json
  # CPU smoke run (8 forced host devices, tiny sizes):
  XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m experiments.benchmark_lookup \
      --data 2 --vocab 4 --items 1000 --batch 16 --length 8 --hidden 16 --reps 2
"""

from __future__ import annotations

import argparse
import datetime
import math
import re
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from srs_jax import distributed as dist
from srs_jax.atomic_files import write_json_atomic

IMPLS = ("xla", "shard_map")
_COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=int, default=0, help="data axis size (0: devices / vocab)")
    p.add_argument("--vocab", type=int, default=0, help="vocab axis size (0: all devices)")
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                   help="table dtype (the trainer keeps params in float32)")
    p.add_argument("--impls", default=",".join(IMPLS),
                   help="comma-separated subset of xla,shard_map")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="JSON file (written atomically)")
    args = p.parse_args(argv)
    args.impls = [s for s in args.impls.split(",") if s]
    bad = sorted(set(args.impls) - set(IMPLS))
    if bad or not args.impls:
        p.error(f"--impls {bad or '(empty)'}: use a comma-separated subset of {','.join(IMPLS)}")
    return args


def _peak_bytes():
    out = []
    for d in jax.local_devices():
        try:
            stats = d.memory_stats() or {}
        except Exception:  # backends without stats (CPU)
            stats = {}
        out.append(stats.get("peak_bytes_in_use"))
    return out


def _collectives(hlo_text: str) -> dict:
    """Count of each collective op in an HLO module's text (async start/done pairs count once)."""
    counts = {}
    for name in _COLLECTIVES:
        # "%x = SHAPE op(" where SHAPE is "f32[8,16]{1,0}" or a tuple "(f32[], f32[4,16]{1,0})"
        n = len(re.findall(rf"= (?:\([^)]*\)|\S+) {name}(?:-start)?\(", hlo_text))
        if n:
            counts[name] = n
    return counts


def _time(fn, args, warmup: int, reps: int):
    """(median ms, all ms) of the compiled ``fn(*args)`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(reps):
        t1 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(1e3 * (time.perf_counter() - t1))
    return statistics.median(times), times


def _memory(compiled) -> dict | None:
    try:
        ma = compiled.memory_analysis()
    except Exception:  # not every backend reports it
        return None
    if ma is None:
        return None
    return {f"{f}_bytes": int(getattr(ma, f"{f}_size_in_bytes"))
            for f in ("argument", "output", "temp")}


def run(args) -> dict:
    n_dev = len(jax.devices())
    vocab = args.vocab or (n_dev // args.data if args.data else n_dev)
    mesh = dist.make_mesh({"data": args.data or n_dev // vocab, "vocab": vocab})
    dtype = jnp.dtype(args.dtype)
    multiple = math.lcm(vocab, 8) if vocab > 1 else 1
    rows = -(-(args.items + 1) // multiple) * multiple
    table_sh = NamedSharding(mesh, P(dist.VOCAB, None))
    batch_sh = NamedSharding(mesh, P(dist.DATA))
    key_t, key_i, key_c = jax.random.split(jax.random.key(args.seed), 3)
    # Created directly in their shardings: no device ever holds the whole table.
    table = jax.jit(lambda k: jax.random.normal(k, (rows, args.hidden), dtype),
                    out_shardings=table_sh)(key_t)
    ids = jax.jit(lambda k: jax.random.randint(k, (args.batch, args.length), 0, args.items + 1,
                                               jnp.int32), out_shardings=batch_sh)(key_i)
    ct = jax.jit(lambda k: jax.random.normal(k, (args.batch, args.length, args.hidden), dtype),
                 out_shardings=batch_sh)(key_c)

    lookups = {"xla": lambda t, i: t[i],  # SASRec's expression
               "shard_map": lambda t, i: dist.sharded_lookup(t, i, mesh)}
    results, outputs = {}, {}
    for impl in args.impls:
        look = lookups[impl]

        def loss(t, i, c, look=look):
            return jnp.sum((look(t, i) * c).astype(jnp.float32))

        fwd = jax.jit(look, out_shardings=batch_sh)
        fwd_bwd = jax.jit(jax.value_and_grad(loss), out_shardings=(None, table_sh))
        row, compiled = {}, {}
        for name, fn, fargs in (("fwd", fwd, (table, ids)), ("fwd_bwd", fwd_bwd, (table, ids, ct))):
            t0 = time.perf_counter()
            compiled[name] = fn.lower(*fargs).compile()
            compile_s = time.perf_counter() - t0
            ms, all_ms = _time(compiled[name], fargs, args.warmup, args.reps)
            row[name] = {"ms": round(ms, 3), "ms_all": [round(t, 3) for t in all_ms],
                         "compile_s": round(compile_s, 2), "memory": _memory(compiled[name]),
                         "collectives": _collectives(compiled[name].as_text())}
        outputs[impl] = (compiled["fwd"](table, ids), compiled["fwd_bwd"](table, ids, ct)[1])
        results[impl] = row

    check = None
    if len(outputs) == 2:
        (fa, ga), (fb, gb) = outputs["xla"], outputs["shard_map"]
        max_abs = jax.jit(lambda a, b: jnp.max(jnp.abs(a.astype(jnp.float32)
                                                       - b.astype(jnp.float32))))
        check = {"fwd_max_abs_diff": float(max_abs(fa, fb)),
                 "grad_max_abs_diff": float(max_abs(ga, gb)),
                 "grad_max_abs": float(jnp.max(jnp.abs(ga.astype(jnp.float32))))}
    return {"mesh": dict(mesh.shape), "devices": n_dev, "device_kind": jax.devices()[0].device_kind,
            "items": args.items, "table_rows": rows, "batch": args.batch, "length": args.length,
            "hidden": args.hidden, "dtype": args.dtype, "warmup": args.warmup, "reps": args.reps,
            "results": results, "agreement": check, "peak_bytes": _peak_bytes()}


def _print_table(row: dict) -> None:
    print(f"lookup {row['batch']}x{row['length']} ids from [{row['table_rows']}, {row['hidden']}] "
          f"{row['dtype']} table, mesh {row['mesh']}, {row['device_kind']}")
    print(f"{'impl':<10} {'fwd ms':>9} {'fwd+bwd ms':>11} {'compile s':>10} {'temp MiB':>9}  "
          "collectives (fwd+bwd)")
    for impl, r in row["results"].items():
        mem = r["fwd_bwd"]["memory"]
        temp = f"{mem['temp_bytes'] / 2**20:.1f}" if mem else "-"
        coll = " ".join(f"{k}:{v}" for k, v in r["fwd_bwd"]["collectives"].items()) or "none"
        print(f"{impl:<10} {r['fwd']['ms']:>9.3f} {r['fwd_bwd']['ms']:>11.3f} "
              f"{r['fwd']['compile_s'] + r['fwd_bwd']['compile_s']:>10.2f} {temp:>9}  {coll}")
    if row["agreement"]:
        a = row["agreement"]
        print(f"agreement: fwd max|diff| {a['fwd_max_abs_diff']:.3g}, grad max|diff| "
              f"{a['grad_max_abs_diff']:.3g} (max|grad| {a['grad_max_abs']:.3g})")
    peaks = [p for p in row["peak_bytes"] if p is not None]
    if peaks:
        print("peak GiB per device: " + " ".join(f"{p / 2**30:.2f}" for p in peaks))


def main(argv=None) -> dict:
    args = parse_args(argv)
    row = run(args)
    _print_table(row)
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(["python -m experiments.benchmark_lookup",
                                 *(sys.argv[1:] if argv is None else argv)]),
            "jax": jax.__version__, "backend": jax.default_backend(),
            "device_kind": row["device_kind"]}
    if args.out:
        write_json_atomic(args.out, {"meta": meta, "rows": [row]}, indent=1)
    return row


if __name__ == "__main__":
    main()
