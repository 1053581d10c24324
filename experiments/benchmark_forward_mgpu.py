"""Experimental Mosaic GPU CCE forward (``pallas_kernels/cce/forward_mgpu.py``) vs the Triton one.

Checks the Mosaic kernel's LSE against a float64 host reference on a ragged catalog, then times
both forwards (median of ``--reps`` after a warm-up) at N x V x D, bf16. GPU (Hopper) only.

  python3 -m experiments.benchmark_forward_mgpu --d 64 128 256
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from pallas_kernels.cce import common, forward, forward_mgpu


def _pad_rows(x, multiple):
    return jnp.pad(x, ((0, -x.shape[0] % multiple), (0, 0)))


def _target_shift(e, c):
    """The target-shift of the Triton forward, with target = row index mod V (float32 [N])."""
    t = jnp.arange(e.shape[0]) % c.shape[0]
    return jnp.einsum("nd,nd->n", e.astype(jnp.float32), c[t].astype(jnp.float32))


def mgpu_lse(e, c, shifted=False, **tiles):
    """Natural-log LSE float32 [N] via the Mosaic kernel (pads rows and catalog)."""
    bn, bv = tiles.get("block_n", 64), tiles.get("block_v", 128)
    e_p = _pad_rows(e, 2 * bn)
    shift2 = None
    if shifted:
        shift2 = jnp.pad(_target_shift(e, c), (0, e_p.shape[0] - e.shape[0])) * common.LOG2E
    lse2 = forward_mgpu.lse2_rows(e_p, _pad_rows(c, bv), c.shape[0], shift2=shift2, **tiles)
    return lse2[: e.shape[0]] * common.LN2


def triton_lse(e, c):
    cfg = common.default_config(e.shape[0], c.shape[0], e.shape[1])
    e_p = _pad_rows(e, cfg.fwd_block_n)
    shift = jnp.pad(_target_shift(e, c), (0, e_p.shape[0] - e.shape[0]))
    lse = forward.lse_rows(e_p, c, c.shape[0], cfg, interpret=False, shift=shift)
    return lse[: e.shape[0]]


def median_ms(f, args, reps):
    jax.block_until_ready(f(*args))
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)


def inputs(n, v, d, seed=0):
    ke, kc = jax.random.split(jax.random.key(seed))
    e = (jax.random.normal(ke, (n, d), jnp.float32) / d**0.25).astype(jnp.bfloat16)
    c = (jax.random.normal(kc, (v, d), jnp.float32) / d**0.25).astype(jnp.bfloat16)
    return e, c


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--d", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--n", type=int, default=131072)
    p.add_argument("--v", type=int, default=1_000_000)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--tiles", default='{"": {}}',
                   help='JSON {"name": {"block_n": .., "block_v": .., "slots": .., "shifted": ..,'
                        ' "shift_load": ..}} variants')
    args = p.parse_args(argv)
    variants = json.loads(args.tiles)
    print(jax.devices()[0].device_kind, jax.__version__, flush=True)
    for d in args.d:
        e, c = inputs(1000, 5037, d, seed=d)
        ref = np.log(np.exp(np.asarray(e, np.float64) @ np.asarray(c, np.float64).T).sum(1))
        for name, tiles in variants.items():
            try:
                got = np.asarray(jax.jit(lambda e, c: mgpu_lse(e, c, **tiles))(e, c), np.float64)
                err = float(np.max(np.abs(got - ref)))
                e2, c2 = inputs(args.n, args.v, d, seed=1)
                ms = median_ms(jax.jit(lambda e, c: mgpu_lse(e, c, **tiles)), (e2, c2), args.reps)
                row = dict(d=d, impl="mosaic", variant=name, tiles=tiles, max_abs_err=err, fwd_ms=ms)
            except Exception as exc:  # keep the other variants
                row = dict(d=d, impl="mosaic", variant=name, tiles=tiles,
                           error=f"{type(exc).__name__}: {str(exc)[:400]}")
            print(json.dumps(row), flush=True)
        e2, c2 = inputs(args.n, args.v, d, seed=1)
        got = np.asarray(jax.jit(triton_lse)(e, c), np.float64)
        ms = median_ms(jax.jit(triton_lse), (e2, c2), args.reps)
        print(json.dumps(dict(d=d, impl="triton", max_abs_err=float(np.max(np.abs(got - ref))),
                              fwd_ms=ms)), flush=True)


if __name__ == "__main__":
    main()
