"""Benchmark exact softmax CE over a linear classifier: CCE kernels vs XLA, against the bound.

For each (case, N, V, D): forward and forward+backward wall time (median of ``--reps`` runs after
a compile/warm-up run, ``block_until_ready``), XLA's compiled memory analysis of the fwd+bwd
function (``temp`` = scratch beyond inputs and outputs, ``out`` = the gradients), the device's
peak-bytes counter, and the fraction of the physical bound achieved:

  forward  >= max(2 N V D / P_mm, N V / P_exp)
  backward >= max(6 N V D / P_mm, N V / P_exp)

P_mm is the bf16 matmul rate measured in the same run (8192^3 product); P_exp is the MUFU exp2
rate, 16 per SM per clock (4.12e12/s measured on an H100), scaled by SMs.

Cases form a registry (``CASES``); ``experiments.benchmark_sampled.cases`` (CCE-) is run as well
when ``--sampled`` is given and that module exists.

  python -m experiments.benchmark_loss --d 64 128 256 --v-sweep 16384 131072 1000000 4000000 \
      --out experiments/results/cce_h100.json
  python -m experiments.benchmark_loss --tune --d 128 --n 32768   # tile sweep of the kernels
  python -m experiments.benchmark_loss --d 64 --variants '{"base": {}, "bwd128": {"block_n": 128}}'

Only the public API of ``pallas_kernels`` is used (``CCEConfig`` for the tiles).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import json
import statistics
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp

from pallas_kernels import CCEConfig, linear_cross_entropy
from pallas_kernels.cce.config import get_default
from srs_jax.atomic_files import write_json_atomic

P_EXP_PER_SM = 4.12e12 / 132  # exp2 per second per SM (H100, measured)


@dataclasses.dataclass(frozen=True)
class Case:
    """A loss to time: ``make(args, v) -> loss(e, c, t) -> scalar``; ``fits(n, v, d, mem)``."""

    name: str
    make: Callable
    fits: Callable = lambda n, v, d, mem: True


def _pallas(args) -> str:
    return "interpret" if args.interpret else "pallas"


def _cce(cfg: CCEConfig | None = None):
    return lambda args, v: (lambda e, c, t: linear_cross_entropy(
        e, c, t, impl=_pallas(args), config=cfg))


def _chunked(block_n: int, block_v: int):
    return lambda args, v: (lambda e, c, t: linear_cross_entropy(
        e, c, t, impl="xla", config=CCEConfig(block_n=block_n, block_v=block_v)))


def _naive(args, v):
    return lambda e, c, t: linear_cross_entropy(e, c, t, impl="naive")


CASES = [
    Case("cce_pallas", _cce()),
    # Chunked XLA with tokamax's tuned H100 blocks (4096 x 8192).
    Case("chunked_xla", _chunked(4096, 8192)),
    # Materialised float32 logits + their gradient: ~3 N V 4 bytes live at once.
    Case("naive_xla", _naive, fits=lambda n, v, d, mem: 3 * n * v * 4 < 0.8 * mem),
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=131072)
    p.add_argument("--v", type=int, default=1_000_000)
    p.add_argument("--d", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--v-sweep", type=int, nargs="*", default=[], help="catalog sizes at --sweep-d")
    p.add_argument("--sweep-d", type=int, default=128)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--cases", nargs="+", default=[c.name for c in CASES])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--sampled", action="store_true", help="also run experiments.benchmark_sampled")
    p.add_argument("--tune", action="store_true", help="sweep kernel tiles instead of cases")
    p.add_argument("--variants", default=None,
                   help='JSON {"name": {CCEConfig fields}}: time these kernel configurations '
                        '(case "cce_<name>") instead of --cases')
    p.add_argument("--fwd-only", action="store_true",
                   help="time the undifferentiated forward only (variant sweeps of forward options)")
    p.add_argument("--interpret", action="store_true", help="Pallas interpreter (CPU smoke test)")
    p.add_argument("--out", default=None, help="JSON file (written atomically)")
    return p.parse_args(argv)


def median_ms(fn, args, reps: int):
    jax.block_until_ready(fn(*args))  # compile + warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), times


def matmul_rate(size: int = 8192, reps: int = 10) -> float:
    """Measured bf16 matmul flop/s on random data (reps queued back to back, best of 3)."""
    if jax.default_backend() == "cpu":
        size, reps = 512, 2  # smoke tests only
    ka, kb = jax.random.split(jax.random.key(1))
    a = jax.random.normal(ka, (size, size), jnp.bfloat16)
    b = jax.random.normal(kb, (size, size), jnp.bfloat16)
    f = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32).astype(jnp.bfloat16))
    jax.block_until_ready(f(a, b))
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        jax.block_until_ready([f(a, b) for _ in range(reps)])
        best = min(best, (time.perf_counter() - t0) / reps)
    return 2 * size**3 / best


def device_info():
    dev = jax.devices()[0]
    sms = getattr(dev, "core_count", None) or 132
    stats = dev.memory_stats() or {}
    return dev, sms, stats.get("bytes_limit", 80 * 2**30)


def bounds_ms(n, v, d, p_mm, p_exp):
    fwd = max(2 * n * v * d / p_mm, n * v / p_exp) * 1e3
    bwd = max(6 * n * v * d / p_mm, n * v / p_exp) * 1e3
    return fwd, fwd + bwd


def make_inputs(n, v, d, dtype, seed=0):
    # Logits of unit spread, uniform targets: a fresh model's regime.
    ke, kc, kt = jax.random.split(jax.random.key(seed), 3)
    e = (jax.random.normal(ke, (n, d), jnp.float32) / d**0.25).astype(dtype)
    c = (jax.random.normal(kc, (v, d), jnp.float32) / d**0.25).astype(dtype)
    t = jax.random.randint(kt, (n,), 0, v, jnp.int32)
    return e, c, t


def run_one(name, loss, e, c, t, reps, p_mm, p_exp, fwd_only=False):
    n, d = e.shape
    v = c.shape[0]
    fwd_bound, total_bound = bounds_ms(n, v, d, p_mm, p_exp)
    row = dict(case=name, n=n, v=v, d=d, dtype=str(e.dtype), fwd_bound_ms=fwd_bound,
               fwd_bwd_bound_ms=total_bound)
    dev = jax.devices()[0]
    stats = dev.memory_stats() or {}
    before, peak_before = stats.get("bytes_in_use", 0), stats.get("peak_bytes_in_use", 0)
    try:
        fwd = jax.jit(loss)
        row["fwd_ms"], row["fwd_all_ms"] = median_ms(fwd, (e, c, t), reps)
        row["fwd_frac_of_bound"] = fwd_bound / row["fwd_ms"]
        if not fwd_only:
            _time_fwd_bwd(row, loss, e, c, t, reps, dev, before, peak_before)
    except Exception as err:  # keep the other rows (e.g. an out-of-memory baseline)
        row["error"] = f"{type(err).__name__}: {str(err)[:300]}"
    print(json.dumps({k: (round(x, 3) if isinstance(x, float) else x)
                      for k, x in row.items() if not k.endswith("_all_ms")}), flush=True)
    return row


def _time_fwd_bwd(row, loss, e, c, t, reps, dev, before, peak_before):
    """value_and_grad time, XLA's temp / output sizes and the peak memory it raised, into row."""
    fwd_bwd = jax.jit(jax.value_and_grad(loss, (0, 1)))
    row["fwd_bwd_ms"], row["fwd_bwd_all_ms"] = median_ms(fwd_bwd, (e, c, t), reps)
    mem = fwd_bwd.lower(e, c, t).compile().memory_analysis()
    if mem is not None:
        row["temp_mib"] = mem.temp_size_in_bytes / 2**20
        row["grads_mib"] = mem.output_size_in_bytes / 2**20
    peak = (dev.memory_stats() or {}).get("peak_bytes_in_use")
    # The counter is process-wide and never resets: it speaks for this case only when the
    # case raised it (otherwise an earlier case or the matmul probe set it; None).
    if peak is not None and peak > peak_before:
        row["peak_extra_mib"] = (peak - before) / 2**20
    row["fwd_bwd_frac_of_bound"] = row["fwd_bwd_bound_ms"] / row["fwd_bwd_ms"]


def shapes(args):
    out = [(args.n, args.v, d) for d in args.d]
    out += [(args.n, v, args.sweep_d) for v in args.v_sweep if (args.n, v, args.sweep_d) not in out]
    return out


def run_cases(args, p_mm, p_exp, mem_limit):
    rows = []
    dtype = jnp.dtype(args.dtype)
    by_name = {c.name: c for c in CASES}
    for n, v, d in shapes(args):
        e, c, t = make_inputs(n, v, d, dtype)
        for name in args.cases:
            case = by_name[name]
            if not case.fits(n, v, d, mem_limit):
                rows.append(dict(case=name, n=n, v=v, d=d, skipped="does not fit in memory"))
                continue
            rows.append(run_one(name, case.make(args, v), e, c, t, args.reps, p_mm, p_exp,
                                args.fwd_only))
        del e, c, t
    return rows


def parse_variants(text: str) -> dict[str, CCEConfig]:
    """``--variants`` JSON {name: {CCEConfig field: value}} -> {name: CCEConfig}; an unknown
    field is a one-line error naming the known ones."""
    known = {f.name for f in dataclasses.fields(CCEConfig)}
    variants = {}
    for name, fields in json.loads(text).items():
        unknown = sorted(set(fields) - known)
        if unknown:
            raise SystemExit(f"--variants {name!r}: unknown CCEConfig fields {unknown}; "
                             f"choose from {sorted(known)}")
        variants[name] = CCEConfig(**fields)
    return variants


def timed_config(cfg: CCEConfig | None, n: int, v: int, d: int, dtype) -> dict:
    """The tiles a run used: ``get_default`` for the shapes with the fields ``cfg`` sets."""
    out = dataclasses.asdict(get_default(n, v, d, dtype))
    given = {} if cfg is None else {k: x for k, x in dataclasses.asdict(cfg).items()
                                    if x is not None}
    out.update(given)
    if "fwd_impl" not in given and out["fwd_impl"] == "triton":  # block_* stand in for fwd_*
        out.update({f"fwd_{k}": given[k] for k in ("block_n", "block_v")
                    if k in given and f"fwd_{k}" not in given})
    return out


def run_variants(args, p_mm, p_exp):
    """Each named CCEConfig of ``--variants`` on every shape (fields not given: defaults)."""
    variants = parse_variants(args.variants)
    rows = []
    dtype = jnp.dtype(args.dtype)
    for n, v, d in shapes(args):
        e, c, t = make_inputs(n, v, d, dtype)
        for name, cfg in variants.items():
            row = run_one(f"cce_{name}", _cce(cfg)(args, v), e, c, t, args.reps, p_mm, p_exp,
                          args.fwd_only)
            row["config"] = timed_config(cfg, n, v, d, dtype)
            rows.append(row)
        del e, c, t
    return rows


def tune_configs(d: int):
    """A small grid of tiles around the defaults (fields not set keep the defaults for D):
    the plain forward's (fwd_block_n x fwd_block_v) and the differentiated path's (block_n x
    block_v: the one-pass forward and the dC kernel)."""
    if d <= 64:
        fwd = [(128, 128), (256, 64), (256, 128), (128, 256), (64, 128)]
        bwd = [(64, 64), (128, 64), (128, 128), (64, 128)]
    elif d <= 128:
        fwd = [(64, 128), (256, 128), (128, 128), (128, 64)]
        bwd = [(64, 64), (128, 128), (128, 64), (64, 128)]
    else:
        fwd = [(256, 64), (128, 64), (64, 128), (256, 32)]
        bwd = [(64, 32), (32, 64), (64, 64), (32, 32), (128, 32)]
    cfgs = [("fwd", CCEConfig(fwd_block_n=bn, fwd_block_v=bv, fwd_impl="triton"))
            for bn, bv in fwd]
    cfgs += [("bwd", CCEConfig(block_n=bn, block_v=bv, fwd_block_n=None)) for bn, bv in bwd]
    return cfgs


def run_tune(args, p_mm, p_exp):
    rows = []
    dtype = jnp.dtype(args.dtype)
    for d in args.d:
        e, c, t = make_inputs(args.n, args.v, d, dtype)
        defaults = get_default(args.n, args.v, d, dtype)
        for part, cfg in tune_configs(d):
            if part == "bwd":  # keep the plain forward's default tiles
                cfg = dataclasses.replace(cfg, fwd_block_n=defaults.fwd_block_n,
                                          fwd_block_v=defaults.fwd_block_v)
            loss = lambda e_, c_, t_, cfg=cfg: linear_cross_entropy(
                e_, c_, t_, impl=_pallas(args), config=cfg)
            row = run_one(f"tune_{part}", loss, e, c, t, max(2, args.reps // 2), p_mm, p_exp)
            row["config"] = timed_config(cfg, args.n, args.v, d, dtype)
            rows.append(row)
    return rows


def run_sampled(args):
    try:
        bs = importlib.import_module("experiments.benchmark_sampled")
    except ImportError:
        return []
    argv = ["--n-rows", str(args.n), "--num-items", str(args.v), "--d", *map(str, args.d)]
    return bs.cases(bs.parse_args(argv))


def print_table(rows):
    print(f"{'case':>12} {'N':>7} {'V':>8} {'D':>4} {'fwd ms':>8} {'f+b ms':>8} {'fwd %bnd':>8} "
          f"{'f+b %bnd':>8} {'temp MiB':>9} {'grads MiB':>9}")
    nan = float("nan")
    for r in rows:
        print(f"{r['case']:>12} {r['n']:>7} {r['v']:>8} {r['d']:>4} {r.get('fwd_ms', nan):8.1f} "
              f"{r.get('fwd_bwd_ms', nan):8.1f} {100 * r.get('fwd_frac_of_bound', nan):8.1f} "
              f"{100 * r.get('fwd_bwd_frac_of_bound', nan):8.1f} {r.get('temp_mib', nan):9.1f} "
              f"{r.get('grads_mib', nan):9.1f} {r.get('skipped', r.get('error', ''))[:60]}")


def main(argv=None):
    args = parse_args(argv)
    unknown = set(args.cases) - {c.name for c in CASES}
    if unknown:
        raise SystemExit(f"unknown cases {sorted(unknown)}; choose from {[c.name for c in CASES]}")
    dev, sms, mem_limit = device_info()
    p_mm = matmul_rate()
    p_exp = P_EXP_PER_SM * sms
    print(f"device={dev.device_kind} sms={sms} bf16_matmul={p_mm / 1e12:.0f} TFLOP/s "
          f"exp2={p_exp / 1e12:.2f} T/s", flush=True)
    if args.tune:
        rows = run_tune(args, p_mm, p_exp)
    elif args.variants:
        rows = run_variants(args, p_mm, p_exp)
    else:
        rows = run_cases(args, p_mm, p_exp, mem_limit)
    sampled = run_sampled(args) if args.sampled and not args.tune else []
    meta = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                device=str(dev.device_kind), sms=sms, jax=jax.__version__,
                python=sys.version.split()[0], argv=sys.argv, bf16_matmul_flops=p_mm,
                exp2_per_s=p_exp, memory_limit_bytes=mem_limit)
    if args.out:
        write_json_atomic(args.out, {"meta": meta, "rows": rows, "sampled_rows": sampled}, indent=1)
    print_table(rows)


if __name__ == "__main__":
    main()
