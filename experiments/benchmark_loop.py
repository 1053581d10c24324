"""Is the host the bottleneck? Steps/s of the training loop vs the bare jitted step, same batches.

    python -m experiments.benchmark_loop --config configs/zvuk_cce.py --steps 200 [--config.x=y ...]

"bare": the batches already on the device (in the trainer's blocks), the trainer's jitted step
(``steps.flat_train_step``: the state packed into a few arrays) called back to back, one sync at
the end: what the device alone sustains. "bare_nnx": the same with ``train_step`` called on the
NNX state pytrees (``steps.make_train_step``), whose Python flattening is what the flat step
avoids. "loop": ``srs_jax.training.loop`` 's epoch function on the same windows: host batching
(BatchIterator), background prefetch to the device, lagged metric fetches, NaN checks, progress
bar (``--noflat``: through the NNX-state call). "host": the same loop around a jitted step that
does no work (same arguments, donation and metrics), i.e. the most steps per second the host side
can feed (``--profile N``: where its time goes, by cProfile). Prints one JSON line; the target
is ``ratio = loop / bare >= 0.95``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from ml_collections import config_flags

from srs_jax.training import cli as _cli

_CONFIG = config_flags.DEFINE_config_file("config", "configs/synthetic_cce.py", "Config file.")
_STEPS = flags.DEFINE_integer("steps", 100, "Timed steps per measurement.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Measurements of each kind (median reported).")
_OUT = flags.DEFINE_string("out", None, "Also write the JSON result to this file.")
_PROFILE = flags.DEFINE_integer("profile", 0, "If > 0: also cProfile one more host-only epoch and "
                                "print its N most expensive functions (by own time) to stderr.")
_FLAT = flags.DEFINE_bool("flat", True, "Loop through steps.flat_train_step (the trainer's "
                          "single-device path); --noflat: pass the NNX state to each jit call.")


def main(argv):
    del argv
    from srs_jax import data as data_lib
    from srs_jax.config import load_specs
    from srs_jax.data import batches as batches_lib
    from srs_jax.losses import build_loss
    from srs_jax.training import flat_state, loop, steps
    from srs_jax.training.state import build_state

    config = load_specs(_CONFIG.value)
    config = dataclasses.replace(config, train=dataclasses.replace(
        config.train, log_every=min(config.train.log_every, max(_STEPS.value // 4, 1))))
    dataset = data_lib.prepare_dataset(config.data)
    inputs, targets = batches_lib.training_windows(dataset.train, config.model.max_len,
                                                   stride=config.train.window_stride)
    bs, n = int(config.train.batch_size), int(_STEPS.value)
    if inputs.shape[0] < bs:
        raise ValueError(f"only {inputs.shape[0]} training windows for batch_size {bs}")
    # Exactly n full batches (repeat windows if the dataset is small), so both paths see n steps.
    rows = np.resize(np.arange(inputs.shape[0]), n * bs)
    windows = {"inputs": np.asarray(inputs[rows], np.int32), "targets": np.asarray(targets[rows], np.int32)}
    graphdef, state = build_state(config.model, dataset.n_items, seed=config.seed)
    optimizer = steps.make_optimizer(config.train, 10 * n)
    opt_state = optimizer.init(state.params)
    loss = build_loss(config.loss, n_items=dataset.n_items, item_counts=dataset.item_counts)
    train_step = steps.make_train_step(config.model, loss, optimizer)

    @functools.partial(jax.jit, static_argnums=0, donate_argnums=(1, 2))
    def idle_step(graphdef_, state_, opt_state_, batch, key_):
        # The loop's host work around a step that costs the device nothing.
        del graphdef_, key_
        one = jnp.float32(1)
        return state_, opt_state_, {"loss": one, "grad_norm": one, "finite": one,
                                    "n_targets": jnp.sum(batch["targets"] > 0).astype(jnp.float32)}

    iterator = batches_lib.BatchIterator(windows, bs, seed=int(config.seed), epoch=0)
    device_batches = [jax.device_put(b) for b in iterator]
    k = loop.BLOCK_STEPS  # the flat step reads its batch from a block, as in the trainer
    device_blocks = [jax.device_put(b) for b in batches_lib.stacked_blocks(iterator, k)]
    key = jax.random.key(0)
    t0 = time.perf_counter()
    state, opt_state, m = train_step(graphdef, state, opt_state, device_batches[0], key)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    spec = flat_state.spec_of(state, opt_state)
    leaves = flat_state.pack(state, opt_state, spec)
    flat_step = steps.flat_train_step(train_step, graphdef, spec)
    key_data = jax.random.key_data(key)
    leaves, m = flat_step(leaves, device_blocks[0], np.int32(0), key_data, np.int32(0))
    jax.block_until_ready(m)  # compiled
    state, opt_state = flat_state.unpack(leaves, spec)

    def bare():
        nonlocal state, opt_state
        leaves = flat_state.pack(state, opt_state, spec)
        t = time.perf_counter()
        for i in range(n):
            leaves, m = flat_step(leaves, device_blocks[i // k], np.int32(i % k), key_data, np.int32(i))
        jax.block_until_ready((leaves, m))
        rate = n / (time.perf_counter() - t)
        state, opt_state = flat_state.unpack(leaves, spec)
        return rate

    def bare_nnx():
        nonlocal state, opt_state
        t = time.perf_counter()
        for i, b in enumerate(device_batches):
            state, opt_state, m = train_step(graphdef, state, opt_state, b, jax.random.fold_in(key, i))
        jax.block_until_ready((state.params, m))
        return n / (time.perf_counter() - t)

    def epoch_rate(step_fn):
        """Steps/s of the trainer's epoch function around ``step_fn``."""
        nonlocal state, opt_state
        meta = {"global_step": 0, "epoch": 0}
        # warm=False: the first step (the flat step's compile in the first run) is timed apart.
        state, opt_state, stats = loop.train_epoch(config, 0, windows, step_fn, graphdef, state,
                                                   opt_state, meta, writer=None, warm=False,
                                                   flat=_FLAT.value)
        return stats["timed_steps"] / stats["train_seconds"]

    looped = functools.partial(epoch_rate, train_step)
    host_only = functools.partial(epoch_rate, idle_step)

    bare_runs, loop_runs, nnx_runs = [], [], []
    for _ in range(int(_REPEATS.value)):  # interleaved, so drift affects all alike
        bare_runs.append(bare())
        loop_runs.append(looped())
        nnx_runs.append(bare_nnx())
    host_runs = [host_only() for _ in range(int(_REPEATS.value))]
    if _PROFILE.value > 0:
        import cProfile
        import pstats
        import sys

        profiler = cProfile.Profile()
        profiler.runcall(host_only)
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(_PROFILE.value)
    result = {
        "config": config.data.name, "loss": config.loss.type, "batch_size": bs,
        "max_len": int(config.model.max_len), "n_items": int(dataset.n_items), "steps": n,
        "device": jax.local_devices()[0].device_kind, "compile_s": round(compile_s, 2),
        "bare_steps_per_s": float(np.median(bare_runs)), "loop_steps_per_s": float(np.median(loop_runs)),
        "bare_runs": [round(x, 3) for x in bare_runs], "loop_runs": [round(x, 3) for x in loop_runs],
        "bare_nnx_steps_per_s": float(np.median(nnx_runs)), "bare_nnx_runs": [round(x, 3) for x in nnx_runs],
        "host_steps_per_s": float(np.median(host_runs)), "host_runs": [round(x, 3) for x in host_runs],
        "prefetch": int(config.train.prefetch), "log_every": int(config.train.log_every),
        "flat": bool(_FLAT.value),
    }
    result["ratio"] = result["loop_steps_per_s"] / result["bare_steps_per_s"]
    line = json.dumps(result)
    print(line)
    if _OUT.value:
        from srs_jax.atomic_files import write_text_atomic

        write_text_atomic(_OUT.value, line + "\n")


if __name__ == "__main__":
    _cli.run_main(main)
