"""Multi-device training throughput: data parallel (``--mode dp``) and vocabulary parallel (``vp``).

One process measures one mesh over all devices it sees (restrict them with CUDA_VISIBLE_DEVICES;
step ``multi`` of ``experiments/gpu_suite.sh`` runs one GPU and all of them). It builds
SASRec directly sharded (``srs_jax.training.state.init_sharded_state``: no device holds the whole
table), builds the loss with the mesh and the trainer's step with ``make_train_step(mesh=...)``,
and times
``--steps`` steps on one device-resident random batch after one compile step. Row fields:
``ms_per_step`` (median of the timed steps, each ``block_until_ready``), ``tokens_per_s``
(target positions per second), ``compile_s``, ``peak_bytes`` per device (``memory_stats``; None on
CPU) and the losses of the first and last step (must be finite).

  python -m experiments.benchmark_multi_gpu --mode dp --out $OUT/dp_4.json           # Zvuk shape
  python -m experiments.benchmark_multi_gpu --mode vp --items 100000000 --batch 256 --out vp.json
  # CPU smoke test (8 forced host devices, tiny sizes):
  XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m experiments.benchmark_multi_gpu \
      --mode vp --items 1000 --batch 16 --length 8 --hidden 16 --steps 2 --impl xla
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time

import jax
import numpy as np

from srs_jax import parallel
from srs_jax.atomic_files import write_json_atomic
from srs_jax.config import LossSpec, MeshSpec, ModelSpec, TrainSpec
from srs_jax.losses import build_loss
from srs_jax.training import steps as steps_lib
from srs_jax.training.state import init_sharded_state


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mode", choices=("dp", "vp"), default="dp",
                   help="dp: mesh (all devices) x 1; vp: mesh 1 x (all devices) unless --vocab")
    p.add_argument("--vocab", type=int, default=0, help="vocab axis size (0: mode default)")
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--batch", type=int, default=1024, help="global batch (sequences per step)")
    p.add_argument("--scaling", choices=("strong", "weak"), default="strong",
                   help="strong: --batch is global; weak: --batch per data shard")
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--blocks", type=int, default=2)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--loss", default="cce", choices=("cce", "cce_neg", "ce"))
    p.add_argument("--num-negatives", type=int, default=511)
    p.add_argument("--impl", default="auto")
    p.add_argument("--dtype", default="auto", help="compute dtype: auto (bf16 on GPU) | float32 | bfloat16")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--budget-s", type=float, default=90.0,
                   help="stop timing after this many seconds of timed steps (at least 2 steps)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--analyze", action="store_true",
                   help="only compile the step and report XLA's per-device memory analysis")
    p.add_argument("--out", default=None, help="JSON file (written atomically)")
    return p.parse_args(argv)


def _peak_bytes():
    out = []
    for d in jax.local_devices():
        try:
            stats = d.memory_stats() or {}
        except Exception:  # backends without stats
            stats = {}
        out.append(stats.get("peak_bytes_in_use"))
    return out


def _random_batch(rng, batch: int, length: int, n_items: int) -> dict:
    seq = rng.integers(1, n_items + 1, (batch, length + 1), dtype=np.int64).astype(np.int32)
    return {"inputs": seq[:, :-1], "targets": seq[:, 1:]}


def run(args) -> dict:
    n_dev = len(jax.devices())
    vocab = args.vocab or (n_dev if args.mode == "vp" else 1)
    mesh = parallel.make_mesh(MeshSpec(data=n_dev // vocab, vocab=vocab))
    n_data = mesh.shape[parallel.DATA]
    batch = args.batch * (n_data if args.scaling == "weak" else 1)
    on_gpu = jax.default_backend() == "gpu"
    dtype = args.dtype if args.dtype != "auto" else ("bfloat16" if on_gpu else "float32")
    model_spec = ModelSpec(name="sasrec", hidden=args.hidden, num_blocks=args.blocks,
                           num_heads=args.heads, dropout=0.1, max_len=args.length,
                           compute_dtype=dtype)
    loss_spec = LossSpec(type=args.loss, impl=args.impl,
                         num_negatives=args.num_negatives if args.loss == "cce_neg" else 0)
    optimizer = steps_lib.make_optimizer(TrainSpec(lr=1e-3, b1=0.9, b2=0.98, eps=1e-8), 1000)

    t0 = time.perf_counter()
    graphdef, state, opt_state = init_sharded_state(model_spec, args.items, mesh, optimizer,
                                                    seed=args.seed)
    jax.block_until_ready(state.params)
    init_s = time.perf_counter() - t0
    loss = build_loss(loss_spec, n_items=args.items, mesh=mesh)
    step = steps_lib.make_train_step(model_spec, loss, optimizer, mesh=mesh, state=state,
                                     opt_state=opt_state)
    rng = np.random.default_rng(args.seed)
    dev_batch = parallel.shard_batch(_random_batch(rng, batch, args.length, args.items), mesh)
    key = jax.random.key(args.seed)
    common = {"mode": args.mode, "devices": n_dev, "mesh": dict(mesh.shape),
              "device_kind": jax.devices()[0].device_kind, "items": args.items, "batch": batch,
              "length": args.length, "hidden": args.hidden, "blocks": args.blocks,
              "loss": args.loss, "impl": args.impl, "compute_dtype": dtype,
              "table_rows": parallel.table_rows(state.params)}
    if args.analyze:
        # Per-device bytes, also in units of one f32 item-table shard (rows / vocab x hidden x 4).
        ma = step.lower(graphdef, state, opt_state, dev_batch, key).compile().memory_analysis()
        shard = parallel.table_rows(state.params) // vocab * args.hidden * 4
        fields = ("argument", "output", "alias", "temp")
        mem = {f"{f}_bytes": int(getattr(ma, f"{f}_size_in_bytes")) for f in fields}
        mem.update({f"{f}_shards": round(mem[f"{f}_bytes"] / shard, 2) for f in fields})
        return {**common, "analysis": mem, "init_s": round(init_s, 2)}

    t0 = time.perf_counter()
    state, opt_state, m = step(graphdef, state, opt_state, dev_batch, jax.random.fold_in(key, 0))
    first_loss = float(m["loss"])  # blocks: includes compile
    compile_s = time.perf_counter() - t0
    times, losses = [], [first_loss]
    t_start = time.perf_counter()
    for i in range(1, args.steps + 1):
        t1 = time.perf_counter()
        state, opt_state, m = step(graphdef, state, opt_state, dev_batch, jax.random.fold_in(key, i))
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t1)
        losses.append(float(m["loss"]))
        if len(times) >= 2 and time.perf_counter() - t_start > args.budget_s:
            break
    ms = 1e3 * statistics.median(times)
    tokens = batch * args.length
    row = {
        **common, "timed_steps": len(times), "ms_per_step": round(ms, 3),
        "ms_per_step_all": [round(1e3 * t, 3) for t in times],
        "tokens_per_s": round(tokens / (ms / 1e3), 1), "compile_s": round(compile_s, 2),
        "init_s": round(init_s, 2), "peak_bytes": _peak_bytes(),
        "loss_first": losses[0], "loss_last": losses[-1],
        "finite": bool(np.all(np.isfinite(losses))),
    }
    return row


def main(argv=None) -> dict:
    args = parse_args(argv)
    row = run(args)
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "jax": jax.__version__, "backend": jax.default_backend(), "argv": sys.argv[1:],
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "nccl_nvls_enable": os.environ.get("NCCL_NVLS_ENABLE")}
    print(json.dumps(row), flush=True)
    if args.out:
        write_json_atomic(args.out, {"meta": meta, "rows": [row]}, indent=1)
    return row


if __name__ == "__main__":
    main()
