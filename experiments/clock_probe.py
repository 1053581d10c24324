"""The SM clock and power a workload runs at, and what it means for the exponential bound.

The forward bound of issue 4 takes the MUFU's rate as 16 exp2 per SM per clock at the clock of
a short exp2 probe (4.12e12/s on an H100, ~1.95 GHz). A long kernel may run at another clock.
For each workload this runs it back to back for ``--seconds`` while ``nvidia-smi`` samples the
SM clock, the power draw and the temperature every 50 ms, and prints:
- the time per call and the median clock and power while it ran;
- the MUFU busy fraction that time implies at that clock, i.e. exp2 count / time /
  (16 x SMs x clock).

Workloads:
- ``mufu``: a Pallas kernel that does nothing but chained ex2.approx in registers. Its busy
  fraction checks the 16-per-clock model.
- ``fwd<D>[_<variant>]``: the CCE loss alone at N = --n, V = --v, bf16 (one exp2 per logit),
  with the defaults or each KernelConfig of ``--variants``; with ``--grad`` also ``f+b<D>``,
  the loss and both gradients (two exp2 per logit: the fused forward and the dC kernel).
- ``matmul``: a bf16 8192^3 product, for comparison.

  python -m experiments.clock_probe --d 64 128 256 --seconds 4 --out clock.json
  python -m experiments.clock_probe --d 64 --variants '{"a": {}, "b": {"fwd_block_n": 128}}'
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import statistics
import subprocess
import time

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from experiments.benchmark_loss import make_inputs, parse_variants
from pallas_kernels.cce import common, linear_cross_entropy
from srs_jax.atomic_files import write_json_atomic

MUFU_PER_SM_CLOCK = 16


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=131072)
    p.add_argument("--v", type=int, default=1_000_000)
    p.add_argument("--d", type=int, nargs="*", default=[64, 128, 256])
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--mufu-iters", type=int, default=4096, help="ex2 per element in `mufu`")
    p.add_argument("--variants", default='{"default": {}}',
                   help="JSON {name: {KernelConfig field: value}}: a fwd<D> workload per variant")
    p.add_argument("--grad", action="store_true",
                   help="also a f+b<D> workload per variant: the loss and both gradients")
    p.add_argument("--no-matmul", action="store_true")
    p.add_argument("--out", default=None, help="JSON file (written atomically)")
    return p.parse_args(argv)


def _mufu_kernel(x_ref, o_ref, *, iters: int):
    def body(_, x):
        return common.exp2(-x, "ex2")  # stays in (1/2, 1]: no overflow, no denormals

    o_ref[...] = lax.fori_loop(0, iters, body, x_ref[...])


def mufu_workload(sms: int, iters: int):
    """(fn, args, exp2 per call): programs of a [64, 128] float32 tile, ``iters`` ex2 each."""
    rows, cols, programs = 64, 128, 8 * sms
    x = jnp.linspace(0.5, 1.0, programs * rows * cols, dtype=jnp.float32).reshape(-1, cols)
    fn = jax.jit(pl.pallas_call(
        functools.partial(_mufu_kernel, iters=iters), grid=(programs,),
        in_specs=[pl.BlockSpec((rows, cols), lambda i: (i, 0))],
        out_specs=pl.BlockSpec((rows, cols), lambda i: (i, 0)),
        out_shape=jax.ShapeDtypeStruct(x.shape, jnp.float32),
        compiler_params=common.compiler_params(4, 1), name="mufu_probe"))
    return fn, (x,), x.size * iters


def sample_while(fn, args, seconds: float):
    """(ms per call, [(sm MHz, W, deg C)]) for ``fn`` run back to back for ``seconds``."""
    jax.block_until_ready(fn(*args))  # compile and warm up
    try:
        smi = subprocess.Popen(
            ["nvidia-smi", "--query-gpu=clocks.sm,power.draw,temperature.gpu",
             "--format=csv,noheader,nounits", "-lms", "50"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    except FileNotFoundError:
        raise SystemExit("clock_probe: nvidia-smi not found; run it on a machine with an NVIDIA "
                         "GPU and its driver tools on PATH") from None
    calls, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        jax.block_until_ready([fn(*args) for _ in range(4)])
        calls += 4
    ms = (time.perf_counter() - t0) / calls * 1e3
    smi.terminate()
    out = smi.communicate(timeout=10)[0]
    samples = []
    for line in out.splitlines():
        try:
            samples.append(tuple(float(x) for x in line.split(",")[:3]))
        except ValueError:
            continue
    return ms, samples[2:]  # (the first samples may predate the load)


def main(argv=None):
    args = parse_args(argv)
    dev = jax.devices()[0]
    sms = getattr(dev, "core_count", None) or 132
    work = [("mufu",) + mufu_workload(sms, args.mufu_iters)]
    variants = parse_variants(args.variants)
    for d in args.d:
        e, c, t = make_inputs(args.n, args.v, d, jnp.bfloat16)
        for name, cfg in variants.items():
            loss = jax.jit(functools.partial(linear_cross_entropy, impl="pallas",
                                             kernel_config=cfg))
            tag = "" if len(variants) == 1 else f"_{name}"
            work.append((f"fwd{d}{tag}", loss, (e, c, t), args.n * args.v))
            if args.grad:  # exp2 per logit: the forward's and the dC kernel's
                work.append((f"f+b{d}{tag}", jax.jit(jax.value_and_grad(loss, (0, 1))),
                             (e, c, t), 2 * args.n * args.v))
    if not args.no_matmul:
        a = jnp.ones((8192, 8192), jnp.bfloat16)
        work.append(("matmul", jax.jit(lambda x, y: x @ y), (a, a), 0))
    rows = []
    for name, fn, fn_args, exps in work:
        ms, samples = sample_while(fn, fn_args, args.seconds)
        mhz = statistics.median(s[0] for s in samples) if samples else float("nan")
        row = dict(workload=name, ms_per_call=ms, sm_mhz=mhz, samples=len(samples),
                   sm_mhz_min=min((s[0] for s in samples), default=None),
                   watts=statistics.median(s[1] for s in samples) if samples else None,
                   deg_c=max((s[2] for s in samples), default=None))
        if exps:
            rate = exps / (ms / 1e3)
            row["exp2_per_s"] = rate
            row["mufu_busy_at_clock"] = rate / (MUFU_PER_SM_CLOCK * sms * mhz * 1e6)
            row["mufu_busy_at_1950mhz"] = rate / (MUFU_PER_SM_CLOCK * sms * 1.95e9)
        rows.append(row)
        print(json.dumps({k: round(x, 3) if isinstance(x, float) else x for k, x in row.items()}),
              flush=True)
    if args.out:
        meta = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    device=dev.device_kind, sms=sms, jax=jax.__version__, n=args.n, v=args.v)
        write_json_atomic(args.out, dict(meta=meta, rows=rows))


if __name__ == "__main__":
    main()
