"""Catalog-scale study: peak device memory and step time of SASRec training per (loss, catalog size).

Each point builds the model for a catalog of ``V`` items and runs the trainer's own jitted
``train_step`` (``srs_jax.training.steps``: forward, loss, backward, Adam update) on random
batches drawn directly on the device (uniform item ids in ``1..V``, every position a target): no
dataset is prepared, because memory and time depend only on the shapes. One compile per point,
``warmup`` untimed steps, then ``steps`` timed steps (each synchronised); the median is reported.

Peak memory is ``peak_bytes_in_use`` of the device, a high-water mark JAX cannot reset. The
command therefore runs each loss in its own process, catalogs in ascending order (memory grows
with ``V``, so the mark after a point is that point's peak); after a loss runs out of memory its
larger catalogs are recorded as ``skipped`` (they would need more). XLA's compile-time estimate
(arguments + outputs + temporaries - aliased) is recorded too; it is per point and also exists on
CPU, where the runtime peak is ``None``; so is ``resident_bytes``, the bytes in use after the model,
Adam state and batches are built (before the first step).
"""

from __future__ import annotations

import collections
import datetime
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from srs_jax import models as models_lib
from srs_jax.config import load_specs
from srs_jax.config.names import SAMPLED_LOSSES
from srs_jax.experiments import errors
from srs_jax.losses import build_loss
from srs_jax.training import profiling, run_files
from srs_jax.training import steps as steps_lib

LOSSES = ("ce", "ce_neg", "cce", "cce_neg")
SAMPLED = tuple(loss for loss in LOSSES if loss in SAMPLED_LOSSES)
CATALOGS = (10_000, 100_000, 1_000_000, 10_000_000)
# The reference's Zvuk shape (MemoryEfficientSRS): batch 1024, length 128, hidden 256,
# 2047 negatives for CCE- (and CE- here, to compare the two at one setting).
ZVUK_SHAPE = dict(batch_size=1024, max_len=128, hidden=256, num_negatives=2047)
SMALL_SHAPE = dict(batch_size=8, max_len=16, hidden=32, num_negatives=15)
SMALL_CATALOGS = (100, 1_000, 10_000)
STATUSES = ("ok", "oom", "skipped", "error", "not_run")
# Worker defaults (the caller's environment wins): allocate on demand, so the pool does not hide
# what a point needs, and let one point use 95% of the card rather than XLA's default 75%.
WORKER_ENV = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false", "XLA_PYTHON_CLIENT_MEM_FRACTION": "0.95"}


def point_config(base, loss: str, *, batch_size: int, max_len: int, hidden: int,
                 num_negatives: int) -> ml_collections.ConfigDict:
    """``base`` (a run config, e.g. configs/base.py) with the study's shape and ``loss``."""
    if loss not in LOSSES:
        raise ValueError(f"loss {loss!r} is not in the study: use some of {list(LOSSES)}")
    c = ml_collections.ConfigDict(base.to_dict())
    c.loss.type = loss
    c.loss.num_negatives = int(num_negatives) if loss in SAMPLED else 0
    c.train.batch_size = int(batch_size)
    c.model.max_len = int(max_len)
    c.model.hidden = int(hidden)
    return ml_collections.ConfigDict(load_specs(c).to_dict())


def _random_batches(key, n: int, batch_size: int, max_len: int, n_items: int):
    out = []
    for k in jax.random.split(key, n):
        ki, kt = jax.random.split(k)
        shape = (batch_size, max_len)
        out.append({"inputs": jax.random.randint(ki, shape, 1, n_items + 1, dtype=jnp.int32),
                    "targets": jax.random.randint(kt, shape, 1, n_items + 1, dtype=jnp.int32)})
    return out


def _compiled_bytes(compiled) -> int | None:
    """XLA's memory estimate of one step: arguments + outputs + temporaries - donated aliases."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # not every backend implements it
        return None
    if m is None:
        return None
    get = lambda name: int(getattr(m, name, 0) or 0)  # noqa: E731
    return (get("argument_size_in_bytes") + get("output_size_in_bytes")
            + get("temp_size_in_bytes") - get("alias_size_in_bytes"))


def _bytes_in_use() -> int | None:
    """Bytes allocated on the first device now, or None where the backend keeps no statistics."""
    try:
        stats = jax.local_devices()[0].memory_stats()
    except Exception:  # some backends raise instead of returning None
        return None
    return int(stats["bytes_in_use"]) if stats and "bytes_in_use" in stats else None


def measure_point(config, n_items: int, *, steps: int = 5, warmup: int = 1) -> dict:
    """Trains ``steps + warmup`` steps at catalog ``n_items``; raises on OOM (the caller records it)."""
    config = load_specs(config)
    batch_size, max_len = int(config.train.batch_size), int(config.model.max_len)
    model = models_lib.build_model(config.model, n_items,
                                   rngs=nnx.Rngs(params=config.seed, dropout=config.seed + 1))
    graphdef, state = steps_lib.split_model(model)
    del model
    optimizer = steps_lib.make_optimizer(config.train, steps + warmup)
    opt_state = optimizer.init(state.params)
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
    batches = _random_batches(jax.random.key(config.seed), steps + warmup, batch_size, max_len, n_items)
    step = steps_lib.make_train_step(config.model, build_loss(config.loss, n_items=n_items), optimizer)
    key0 = jax.random.key(config.seed + 2)
    jax.block_until_ready((state, opt_state, batches))
    resident = _bytes_in_use()  # model + Adam state + batches, before any step

    t0 = time.perf_counter()
    compiled = step.lower(graphdef, state, opt_state, batches[0], key0).compile()
    compile_s = time.perf_counter() - t0
    times, losses = [], []
    for i, batch in enumerate(batches):
        t = time.perf_counter()
        state, opt_state, m = compiled(state, opt_state, batch, jax.random.fold_in(key0, i))
        jax.block_until_ready((state, opt_state, m))
        if i >= warmup:
            times.append(time.perf_counter() - t)
        losses.append(float(m["loss"]))
    median = statistics.median(times)
    return {
        "status": "ok", "error": "", "n_params": n_params,
        "peak_memory_bytes": profiling.peak_memory_bytes(), "resident_bytes": resident,
        "compiled_memory_bytes": _compiled_bytes(compiled),
        "compile_s": compile_s, "median_step_s": median, "step_times_s": times,
        "tokens_per_s": batch_size * max_len / median, "loss_first": losses[0],
        "loss_last": losses[-1], "finite": bool(np.all(np.isfinite(losses))),
    }


def _free() -> None:
    gc.collect()
    jax.clear_caches()


def run_loss(base, loss: str, catalogs, *, shape: dict, steps: int, warmup: int,
             emit: Callable[[dict], None], deadline: float | None = None,
             log: Callable[[str], None] = print) -> None:
    """Every catalog of one loss, ascending; after an OOM the larger catalogs are ``skipped``."""
    config = point_config(base, loss, **shape)
    where = device_fields(config)
    failed_at = None
    for n_items in sorted(int(v) for v in catalogs):
        point = {"loss": loss, "n_items": n_items, **where}
        if failed_at is not None:
            emit({**point, "status": "skipped",
                  "error": f"not run: {loss} already ran out of memory at {failed_at} items"})
            continue
        if deadline is not None and time.time() > deadline:
            emit({**point, "status": "not_run", "error": "time budget spent (--time_budget_s)"})
            continue
        log(f"[catalog] {loss} V={n_items:,} ...")
        try:
            out = measure_point(config, n_items, steps=steps, warmup=warmup)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # an OOM is a result here; anything else is recorded as an error
            oom = errors.is_out_of_memory(e)
            out = {"status": "oom" if oom else "error", "error": errors.short_message(e)}
            if oom:
                failed_at = n_items
        finally:
            _free()
        emit({**point, **out})
        log(f"[catalog] {loss} V={n_items:,}: {_describe(out)}")


def _describe(p: dict) -> str:
    if p["status"] != "ok":
        return f"{p['status']} ({p['error'][:160]})"
    mem = p.get("peak_memory_bytes") or p.get("compiled_memory_bytes")
    return f"{p['median_step_s'] * 1e3:.1f} ms/step, {mem / 2**30 if mem else float('nan'):.2f} GiB"


def append_jsonl(path: str, record: dict) -> None:
    """Appends one complete line and fsyncs it, so a crashed worker keeps its finished points."""
    with open(path, "a") as f:
        f.write(json.dumps(record, sort_keys=True, allow_nan=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str) -> list[dict]:
    """Complete lines only (a line cut by a crash has no newline and is ignored)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        text = f.read()
    return [json.loads(line) for line in text.split("\n")[:-1] if line.strip()]


def device_fields(config) -> dict:
    """Where a point runs (recorded by the process that runs it)."""
    return {"device": str(jax.local_devices()[0].device_kind), "backend": jax.default_backend(),
            "compute_dtype": str(config.model.compute_dtype)}


def metadata(*, shape: dict, steps: int, warmup: int, losses, catalogs, isolate: str,
             base) -> dict:
    """The study's settings. Never touches a device: with ``isolate='loss'`` this process must not
    hold GPU memory (or a preallocated pool) while the workers measure."""
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "jax": jax.__version__, "python": platform.python_version(), **shape,
        "steps": steps, "warmup": warmup, "losses": list(losses), "catalogs": [int(v) for v in catalogs],
        "isolate": isolate, "sharing": base.loss.sharing, "impl": base.loss.impl,
        "sampler": base.loss.sampler, "num_blocks": int(base.model.num_blocks),
        "num_heads": int(base.model.num_heads),
        "data": "random item ids drawn on the device per step (no dataset)",
        "xla_env": {k: os.environ.get(k, v if isolate == "loss" else None) for k, v in WORKER_ENV.items()},
        "command": " ".join([os.path.basename(sys.executable), "-m", "experiments.catalog_scale"]
                            + sys.argv[1:]),
    }


def run_study(base, *, losses=LOSSES, catalogs=CATALOGS, shape: dict = ZVUK_SHAPE, steps: int = 5,
              warmup: int = 1, isolate: str = "loss", out_path: str,
              time_budget_s: float | None = None, worker_module: str = "experiments.catalog_scale",
              worker_args: list[str] | None = None, log: Callable[[str], None] = print) -> dict:
    """Runs the study and writes ``out_path`` (JSON: ``meta`` and one ``points`` entry per (loss, V)).

    ``isolate='loss'`` runs each loss in a child process (``python -m <worker_module> --worker
    --loss L ...`` with ``worker_args``); ``'none'`` runs everything here (peak memory is then
    the process's high-water mark over all points so far).
    """
    if isolate not in ("loss", "none"):
        raise ValueError(f"isolate={isolate!r}: use 'loss' or 'none'")
    bad = [l for l in losses if l not in LOSSES]
    if bad or not losses:
        raise ValueError(f"losses {list(losses)}: choose from {list(LOSSES)}")
    if not catalogs or min(int(v) for v in catalogs) < 2:
        raise ValueError(f"catalogs {list(catalogs)}: give catalog sizes >= 2, e.g. 10000,100000")
    deadline = time.time() + time_budget_s if time_budget_s else None
    meta = metadata(shape=shape, steps=steps, warmup=warmup, losses=losses, catalogs=catalogs,
                    isolate=isolate, base=base)
    jsonl = out_path + ".points.jsonl"
    if os.path.exists(jsonl):
        os.remove(jsonl)
    for loss in losses:
        if isolate == "none":
            run_loss(base, loss, catalogs, shape=shape, steps=steps, warmup=warmup,
                     emit=lambda r: append_jsonl(jsonl, r), deadline=deadline, log=log)
            continue
        remaining = None if deadline is None else max(deadline - time.time(), 0.0)
        cmd = [sys.executable, "-m", worker_module, "--worker", f"--losses={loss}",
               f"--catalogs={','.join(str(int(v)) for v in catalogs)}", f"--points_file={jsonl}",
               f"--steps={steps}", f"--warmup={warmup}", *(worker_args or [])]
        if remaining is not None:
            cmd.append(f"--time_budget_s={remaining}")
        code, tail = _run_streaming(cmd)
        done = {(r["loss"], r["n_items"]) for r in read_jsonl(jsonl)}
        missing = [v for v in sorted(int(v) for v in catalogs) if (loss, v) not in done]
        # A worker that died hard (no exception to catch) on an allocation is an OOM too.
        oom = any(m in tail for m in ("RESOURCE_EXHAUSTED", "out of memory", "OUT_OF_MEMORY"))
        last = " ".join(tail.strip().splitlines()[-1:])[:200]
        for i, n_items in enumerate(missing):
            status = ("oom" if i == 0 else "skipped") if oom else "error"
            append_jsonl(jsonl, {"loss": loss, "n_items": n_items, "status": status,
                                 "error": f"worker exited with code {code} before recording this "
                                          f"point: {last}"})
    points = read_jsonl(jsonl)
    for key in ("device", "backend", "compute_dtype"):
        meta[key] = next((p[key] for p in points if p.get(key)), None)
    result = {"meta": meta, "points": points}
    run_files.write_json(out_path, result)
    os.remove(jsonl)
    return result


def _run_streaming(cmd: list[str]) -> tuple[int, str]:
    """Runs ``cmd``, passing its stderr through; returns (exit code, last lines of stderr)."""
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, errors="replace",
                            env={**WORKER_ENV, **os.environ})
    tail: collections.deque[str] = collections.deque(maxlen=40)
    for line in proc.stderr:
        sys.stderr.write(line)
        tail.append(line)
    return proc.wait(), "".join(tail)


def load_study(path: str) -> dict:
    """A catalog-scale JSON written by ``run_study`` (one-line error if it is not one)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: run python -m experiments.catalog_scale first")
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict) or "points" not in data or "meta" not in data:
        raise ValueError(f"{path} is not a catalog-scale JSON (no 'meta'/'points'): pass the file "
                         "written by experiments.catalog_scale --out")
    return data
