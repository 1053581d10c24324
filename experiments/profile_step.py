"""Run one jitted CCE- loss (or loss + gradients) a few times, for a profiler to time its kernels.

No timing of its own: Nsight Compute's per-kernel summary over the ``--steps`` calls (after one
warm-up call) splits a step into its kernels (the Pallas kernels, XLA's memsets, converts and
reductions), which the wall-clock benchmark (``benchmark_sampled``) cannot. Same inputs as the
benchmark (N = 131072, n = 511, V = 10^6, bf16 by default). ``--kwargs`` is JSON for
``pallas_kernels.sampled_linear_cross_entropy`` (e.g. ``'{"sharing": "block"}'``), ``--config``
JSON for its ``SampledConfig`` (e.g. ``'{"row_block": 16}'``).

  ncu --metrics gpu__time_duration.sum --print-summary per-kernel \\
    python -m experiments.profile_step --d 128 --grad --kwargs '{"sharing": "block"}'
"""

from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp

from experiments.benchmark_loss import make_inputs
from pallas_kernels import SampledConfig, sampled_linear_cross_entropy


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-rows", type=int, default=131072)
    p.add_argument("--num-items", type=int, default=1_000_000)
    p.add_argument("--num-negatives", type=int, default=511)
    p.add_argument("--d", type=int, default=128)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--grad", action="store_true", help="value and both gradients (else the loss)")
    p.add_argument("--steps", type=int, default=3, help="calls after the warm-up call")
    p.add_argument("--kwargs", default="{}", help="JSON: sampled_linear_cross_entropy options")
    p.add_argument("--config", default="{}", help="JSON: SampledConfig fields")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    kw = json.loads(args.kwargs)
    kw.setdefault("impl", "pallas")
    config = json.loads(args.config)
    if config:
        kw["config"] = SampledConfig(**config)
    d = args.d
    e, c, t = make_inputs(args.n_rows, args.num_items, d, jnp.dtype(args.dtype), seed=d)

    def loss(e_, c_, s):
        return sampled_linear_cross_entropy(e_, c_, t, num_negatives=args.num_negatives, seed=s,
                                            **kw)

    fn = jax.jit(jax.value_and_grad(loss, (0, 1)) if args.grad else loss)
    jax.block_until_ready(fn(e, c, jnp.int32(0)))
    for s in range(args.steps):
        jax.block_until_ready(fn(e, c, jnp.int32(s + 1)))
    print(json.dumps(dict(d=d, grad=args.grad, steps=args.steps, config=config,
                          **{k: v for k, v in kw.items() if k != "config"})))


if __name__ == "__main__":
    main()
