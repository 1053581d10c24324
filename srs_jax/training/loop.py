"""The training loop: epochs, validation, early stopping, checkpoints, final test, results.json.

``train(config, workdir, resume=False) -> results`` is deterministic on a given backend: data
order is a function of ``(seed, epoch)`` and every step key is ``fold_in(key(seed), global_step)``,
so a run resumed from its latest checkpoint continues bit for bit (on CPU).

Several processes (``srs_jax.parallel.multihost``) run the same loop on one mesh: each feeds its
rows of every global batch, all take part in evaluation and checkpoints, and only process 0
writes the run files and prints.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import sys
import time

import jax
import ml_collections
import numpy as np

from srs_jax import data as data_lib
from srs_jax import losses as losses_lib
from srs_jax import parallel
from srs_jax.config import RunSpec, load_specs
from srs_jax.data import batches as batches_lib
from srs_jax.training import checkpoints as ckpt_lib
from srs_jax.training import evaluation
from srs_jax.training import flat_state
from srs_jax.training import profiling
from srs_jax.training import progress as progress_lib
from srs_jax.training import run_files
from srs_jax.training import steps as steps_lib
from srs_jax.training import workdir as workdir_lib
from srs_jax.training.prefetch import Prefetcher
from srs_jax.training.state import build_state
from srs_jax.training.warm_start import warm_start


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN/inf loss or gradient; the last good checkpoint is kept."""


class ProcessLostError(RuntimeError):
    """A collective operation with the other processes of the run failed: one of them died."""


# How a collective reports a peer that went away (CPU: gloo; GPU: NCCL or the runtime).
_LOST_PEER = re.compile(r"Gloo|NCCL|[Cc]onnection (reset|refused|closed)|UNAVAILABLE|peer")


def _log(msg: str) -> None:
    if parallel.is_primary():
        print(msg, file=sys.stderr, flush=True)


def _initial_meta() -> dict:
    return {"epoch": 0, "global_step": 0, "step_in_epoch": 0, "partial": None,
            "best_value": None, "best_epoch": None, "bad_epochs": 0, "history": [], "stopped": None,
            "profile": {"train_seconds": [], "epoch_seconds": [], "steps": 0, "tokens": 0,
                        "peak_train_bytes": None}}


def _fetch(pending: list) -> dict:
    """Host copy of a list of per-step metrics (dicts, or fp32[4] arrays in ``steps.METRICS``
    order): losses of the finite steps, target tokens, and the index of the first non-finite step
    (or None)."""
    if not pending:
        return {"losses": [], "tokens": 0.0, "bad": None}
    host = jax.device_get(pending)
    rows = np.array([[m[k] for k in steps_lib.METRICS] if isinstance(m, dict) else m for m in host],
                    np.float64).reshape(len(host), len(steps_lib.METRICS))
    loss, tokens, finite = (rows[:, steps_lib.METRICS.index(k)] for k in ("loss", "n_targets", "finite"))
    bad = int(np.argmin(finite)) if finite.min() < 1 else None
    return {"losses": [float(x) for x in loss[finite > 0]], "tokens": float(np.sum(tokens)),
            "bad": bad, "bad_loss": float(loss[bad]) if bad is not None else None}


BLOCK_STEPS = 16  # batches per host-to-device transfer on the flat path (train.prefetch blocks queued)


def _steps_in(items, k: int, n: int):
    """``(i, item, index)`` for the ``n`` steps of an epoch, ``items`` holding ``k`` steps each
    (the last one padded)."""
    i = 0
    for item in items:
        for index in range(min(k, n - i)):
            yield i, item, index
            i += 1


class _Stepper:
    """Runs the epoch's steps: through ``steps.flat_train_step`` (the state held as a few packed
    arrays, ``flat_state``; see there why) when ``flat``, else through ``train_step`` itself (the
    sharded step, which shards each batch on the host)."""

    def __init__(self, train_step, graphdef, state, opt_state, base_key, flat: bool):
        self._train_step, self._graphdef, self._key, self._flat = train_step, graphdef, base_key, flat
        if flat:
            self._spec = flat_state.spec_of(state, opt_state)
            self._buffers = flat_state.pack(state, opt_state, self._spec)
            self._step = steps_lib.flat_train_step(train_step, graphdef, self._spec)
            self._key_data = jax.random.key_data(base_key)
        else:
            self._state = (state, opt_state)

    def __call__(self, item, index: int, global_step: int):
        """One step on batch ``index`` of the block ``item`` (flat), or on the batch ``item``
        (``index`` 0); returns its metrics (on the device)."""
        if self._flat:
            self._buffers, metrics = self._step(self._buffers, item, np.int32(index), self._key_data,
                                               np.int32(global_step))
            return metrics
        state, opt_state, metrics = self._train_step(
            self._graphdef, *self._state, item, jax.random.fold_in(self._key, global_step))
        self._state = (state, opt_state)
        return metrics

    def state(self):
        """``(state, opt_state)`` after the steps run so far."""
        return flat_state.unpack(self._buffers, self._spec) if self._flat else self._state


def train_epoch(config: RunSpec, epoch, windows, train_step, graphdef, state, opt_state, meta,
                writer, warm, save_mid_epoch=None, flat=True, mesh=None):
    """Runs the (rest of the) epoch; returns ``(state, opt_state, stats)``.

    ``flat``: step through ``steps.flat_train_step(train_step, ...)`` (``train_step`` must then be
    the jitted single-device step of ``steps.make_train_step``); False for the step on ``mesh``,
    where with several processes each reads and feeds only its rows of each batch. ``warm``: the
    step has been compiled (else the first step is timed apart as compilation).

    A run resumed from a mid-epoch checkpoint (``meta["step_in_epoch"] > 0``) skips the batches
    already seen; ``meta["partial"]`` carries that epoch's losses, tokens and seconds so far.
    ``save_mid_epoch(meta, state, opt_state)`` is called every ``train.checkpoint_every_steps``.
    """
    tc = config.train
    n_windows = windows["inputs"].shape[0]
    n_steps = math.ceil(n_windows / int(tc.batch_size))
    start = int(meta.get("step_in_epoch") or 0)
    partial = meta.get("partial") or {"losses": [], "tokens": 0.0, "seconds": 0.0}
    rows = put = None
    if mesh is not None and jax.process_count() > 1:
        rows = parallel.process_rows(mesh, int(tc.batch_size))
        put = functools.partial(parallel.shard_batch, mesh=mesh, global_rows=int(tc.batch_size))
    iterator = batches_lib.BatchIterator(windows, int(tc.batch_size), seed=int(config.seed),
                                         epoch=epoch, shuffle=True, start_step=start, rows=rows)
    stepper = _Stepper(train_step, graphdef, state, opt_state, jax.random.key(config.seed), flat)
    del state, opt_state  # donated by the steps: only the stepper's copy is live
    log_every = int(tc.log_every)
    every = tc.checkpoint_every_steps
    losses, tokens = list(partial["losses"]), float(partial["tokens"])
    pending, logged = [], []
    compile_seconds, save_seconds = 0.0, 0.0
    step0 = int(meta["global_step"])  # global step of this call's first batch
    last_saved = step0
    t0 = time.perf_counter()
    # [run-folder integration] a tqdm bar on a terminal, periodic progress lines elsewhere.
    quiet = {} if parallel.is_primary() else {"interval": math.inf, "terminal": False}
    bar = progress_lib.Progress(total=n_steps, initial=start, desc=f"epoch {epoch + 1}/{tc.max_epochs}",
                                **quiet)

    def drain(batch_metrics, first_step):
        nonlocal tokens
        got = _fetch(batch_metrics)
        if got["bad"] is not None:
            raise NonFiniteLossError(
                f"non-finite loss ({got['bad_loss']}) or gradient at epoch {epoch + 1}, global step "
                f"{first_step + got['bad']}: stopped; the last good checkpoint (epoch {meta['epoch']}, "
                f"global step {last_saved}) is kept in checkpoints/latest. Lower config.train.lr or "
                f"set config.train.grad_clip")
        losses.extend(got["losses"])
        tokens += got["tokens"]
        return got

    try:
        # The flat step takes its inputs in blocks of BLOCK_STEPS batches (one transfer each).
        k = BLOCK_STEPS if flat else 1
        items = batches_lib.stacked_blocks(iterator, k) if flat else iter(iterator)
        with Prefetcher(items, int(tc.prefetch), put=put) as device_items:
            pending_start = step0
            for i, item, index in _steps_in(device_items, k, n_steps - start):
                m = stepper(item, index, step0 + i)
                if i == 0 and not warm:
                    # First call of the process compiles: timed apart, not counted as training.
                    jax.block_until_ready(m)
                    compile_seconds = time.perf_counter() - t0
                pending.append(m)
                if len(pending) == log_every:
                    # Fetch the previous interval (already computed) so the device queue never drains.
                    if logged:
                        got = drain(logged, pending_start - log_every)
                        if got["losses"]:
                            loss = sum(got["losses"]) / len(got["losses"])
                            if writer is not None:
                                writer.add_scalar("train/loss", loss, pending_start)
                            elapsed = time.perf_counter() - t0
                            bar.set_postfix(loss=f"{loss:.4f}", steps_s=f"{(i + 1) / elapsed:.1f}",
                                            tok_s=f"{tokens / elapsed:.3g}")
                    logged, pending = pending, []
                    pending_start += log_every
                bar.update(1)
                done = start + i + 1
                if every and save_mid_epoch is not None and done % every == 0 and done < n_steps:
                    # Everything up to here must be finite before it becomes the latest checkpoint.
                    drain(logged, pending_start - log_every)
                    drain(pending, pending_start)
                    logged, pending, pending_start = [], [], step0 + i + 1
                    t_save = time.perf_counter()
                    seconds = partial["seconds"] + t_save - t0 - compile_seconds - save_seconds
                    save_mid_epoch(dict(meta, global_step=step0 + i + 1, step_in_epoch=done,
                                        partial={"losses": losses, "tokens": tokens, "seconds": seconds}),
                                   *stepper.state())
                    last_saved = step0 + i + 1
                    save_seconds += time.perf_counter() - t_save
            drain(logged, pending_start - log_every)
            drain(pending, pending_start)
            state, opt_state = stepper.state()
            jax.block_until_ready(state.params)
    finally:
        bar.close()
    seconds = partial["seconds"] + time.perf_counter() - t0 - compile_seconds - save_seconds
    # fsum: the epoch loss does not depend on how the epoch was split by a resume.
    return state, opt_state, {"train_loss": math.fsum(losses) / max(len(losses), 1),
                              "steps_run": n_steps - start, "tokens": int(tokens),
                              "train_seconds": seconds,
                              "timed_steps": n_steps - (0 if warm else 1),
                              "compile_seconds": compile_seconds}


def _improved(value: float, best) -> bool:
    return best is None or value > best  # strict, as the reference's EarlyStopping


def train(config: ml_collections.ConfigDict, workdir: str | None = None, resume: bool = False,
          init_from: str | None = None) -> dict:
    """Trains ``config`` into ``workdir``; returns the ``results.json`` dict.

    ``config`` (a ConfigDict, or a dict such as a run's ``config.json``) is validated once by
    ``srs_jax.config.load_specs``; everything below reads the resulting ``RunSpec``.
    ``init_from``: folder of an earlier run whose best parameters start this one
    (``srs_jax.training.warm_start``: items matched by raw id; fresh optimizer state); a model
    that does not match raises ``WarmStartError`` before anything is written.
    """
    if init_from and resume:
        raise ValueError("--init_from starts a new run and --resume continues one: pass only one")
    workdir = workdir or config.get("workdir") or ""
    if not workdir:
        raise ValueError("no run directory: pass --workdir DIR (or set config.workdir)")
    # Joins the other processes, if any, before anything touches a JAX backend (as resolving
    # compute_dtype 'auto' does).
    parallel.initialize_multihost(load_specs(config, resolve_auto=False).mesh)
    config = load_specs(config)
    config = dataclasses.replace(config, workdir=os.path.abspath(workdir))
    workdir = config.workdir
    if not resume and ckpt_lib.has_checkpoint(workdir):
        raise ValueError(f"{workdir} already holds a run: pass --resume to continue it, or choose "
                         "another --workdir")
    dataset = _prepare_dataset(config.data)  # bad data settings fail before any file is written
    workdir_lib.check_against_data(config, dataset.n_items)  # [run-folder integration]
    windows_in, windows_tg = batches_lib.training_windows(
        dataset.train, config.model.max_len, stride=config.train.window_stride)
    windows = {"inputs": np.asarray(windows_in, np.int32), "targets": np.asarray(windows_tg, np.int32)}
    n_steps = math.ceil(windows["inputs"].shape[0] / int(config.train.batch_size))
    _log(f"[srs_jax] {config.data.name}: {dataset.n_items} items, {dataset.n_users} users, "
         f"{windows['inputs'].shape[0]} training windows, {n_steps} steps/epoch; backend "
         f"{jax.default_backend()}, compute {config.model.compute_dtype}; workdir {workdir}")

    graphdef, state = build_state(config.model, dataset.n_items, seed=config.seed)
    warm = None
    if init_from:  # before the optimizer (fresh state for the new parameters) and the mesh
        params, warm = warm_start(init_from, dataset.item_raw_ids, state.params)
        state = state._replace(params=params)
        _log(f"[srs_jax] warm start from {warm['init_from']} (step {warm['checkpoint_step']}): "
             f"{warm['items_kept']} items kept, {warm['items_new']} new, "
             f"{warm['items_dropped']} dropped")
    optimizer = steps_lib.make_optimizer(config.train, n_steps * config.train.max_epochs)
    opt_state = optimizer.init(state.params)
    # config.mesh: several devices -> padded, sharded state; before the resume block so that
    # checkpoints restore into the sharded shapes (docs/distributed.md). None: one device.
    mesh = parallel.run_mesh(config.mesh)
    if mesh is not None:
        if config.train.batch_size % mesh.shape[parallel.DATA]:
            raise ValueError(f"config.train.batch_size={config.train.batch_size} must be a multiple "
                             f"of the {mesh.shape[parallel.DATA]} data shards of config.mesh")
        state, opt_state = parallel.place_state(state, opt_state, mesh)
        _log(f"[srs_jax] mesh {dict(mesh.shape)} over {mesh.size} devices")
    meta = _initial_meta()
    meta["warm_start"] = warm
    os.makedirs(workdir, exist_ok=True)
    ckpts = ckpt_lib.RunCheckpoints(workdir)
    try:
        if resume:
            if ckpts.latest_step() is None:
                _log(f"[srs_jax] --resume: no checkpoint in {workdir} yet, starting from scratch")
            else:
                tree, meta = ckpts.restore_latest(ckpt_lib.checkpoint_tree(state, opt_state))
                state, opt_state = state._replace(params=tree["params"]), tree["opt_state"]
                _log(f"[srs_jax] resumed after epoch {meta['epoch']} + "
                     f"{meta.get('step_in_epoch') or 0} steps (global step {meta['global_step']})")
        # Written once the restore worked, so a failed resume leaves the old config.json.
        if parallel.is_primary():
            run_files.save_config(workdir, ml_collections.ConfigDict(config.to_dict()))
        return _train_in(config, workdir, dataset, windows, graphdef, state, optimizer,
                         opt_state, mesh, meta, ckpts)
    except jax.errors.JaxRuntimeError as e:
        if jax.process_count() > 1 and _LOST_PEER.search(str(e)):
            cause = " ".join(str(e).split())[:200]
            raise ProcessLostError(f"a collective operation with the other processes failed "
                                   f"({cause}): another process of this run died or was "
                                   "killed") from e
        raise
    finally:
        ckpts.close()


def _prepare_dataset(data_config):
    """``prepare_dataset``; with several processes process 0 first (it builds the cache), then
    the others (they load it), rather than all building the same cache at once."""
    if parallel.is_primary():
        dataset = data_lib.prepare_dataset(data_config)
        parallel.barrier("srs_jax: dataset prepared")
        return dataset
    parallel.barrier("srs_jax: dataset prepared")
    return data_lib.prepare_dataset(data_config)


def _train_in(config: RunSpec, workdir: str, dataset, windows: dict, graphdef, state, optimizer,
              opt_state, mesh, meta: dict, ckpts) -> dict:
    """``train`` once the state is built (and restored) and the run folder is open."""
    loss = losses_lib.build_loss(config.loss, n_items=dataset.n_items,
                                 item_counts=np.asarray(dataset.item_counts), mesh=mesh)
    train_step = steps_lib.make_train_step(config.model, loss, optimizer, mesh=mesh, state=state,
                                           opt_state=opt_state)
    encode_fn = steps_lib.make_encode_step(config.model)
    profile = profiling.RunProfile(
        train_seconds=list(meta["profile"]["train_seconds"]),
        epoch_seconds=list(meta["profile"]["epoch_seconds"]),
        steps=int(meta["profile"]["steps"]), tokens=int(meta["profile"]["tokens"]),
        peak_train_bytes=meta["profile"]["peak_train_bytes"],
        _train_peak_taken=bool(meta["profile"]["train_seconds"]))
    monitor = str(config.eval.monitor)
    writer = _tensorboard(workdir) if parallel.is_primary() else None
    def save_mid_epoch(mid_meta, st, ost):
        ckpts.save_latest(mid_meta["global_step"], ckpt_lib.checkpoint_tree(st, ost), mid_meta)

    budget = config.train.max_train_seconds
    started, epochs_here = time.perf_counter(), 0
    try:
        while meta["stopped"] is None and meta["epoch"] < config.train.max_epochs:
            spent = bool(budget and epochs_here and time.perf_counter() - started > budget)
            if parallel.from_primary(spent):  # every process stops after the same epoch
                # Checked between epochs (each run trains >= 1 epoch). Not persisted: a resumed
                # run gets a fresh budget and continues.
                _log(f"[srs_jax] time budget of {budget:g}s spent after epoch {meta['epoch']}")
                break
            epoch = int(meta["epoch"])
            epochs_here += 1
            state, opt_state, stats = train_epoch(
                config, epoch, windows, train_step, graphdef, state, opt_state, meta, writer,
                warm=bool(profile.compile_seconds), save_mid_epoch=save_mid_epoch,
                flat=mesh is None, mesh=mesh)
            profile.compile_seconds += stats["compile_seconds"]
            profile.end_training_phase(stats["train_seconds"], stats["timed_steps"], stats["tokens"])
            t_val = time.perf_counter()
            val, _ = evaluation.evaluate_model(graphdef, state, dataset.val, config=config,
                                               n_items=dataset.n_items, encode_fn=encode_fn)
            val_seconds = time.perf_counter() - t_val
            profile.end_epoch(stats["train_seconds"] + val_seconds)

            value = val[monitor]
            meta["epoch"] = epoch + 1
            meta["global_step"] = int(meta["global_step"]) + stats["steps_run"]
            meta["step_in_epoch"], meta["partial"] = 0, None
            improved = _improved(value, meta["best_value"])
            if improved:
                meta.update(best_value=value, best_epoch=epoch + 1, bad_epochs=0)
            else:
                meta["bad_epochs"] = int(meta["bad_epochs"]) + 1
            if meta["bad_epochs"] >= config.train.patience:
                meta["stopped"] = f"early stopping: no {monitor} improvement in {config.train.patience} epochs"
            row = {"epoch": epoch + 1, "global_step": meta["global_step"],
                   "train_loss": stats["train_loss"], "train_seconds": stats["train_seconds"],
                   "val_seconds": val_seconds, "epoch_seconds": stats["train_seconds"] + val_seconds,
                   "steps_per_s": stats["timed_steps"] / max(stats["train_seconds"], 1e-9),
                   "tokens_per_s": stats["tokens"] / max(stats["train_seconds"], 1e-9),
                   "compile_seconds": stats["compile_seconds"],
                   "peak_memory_bytes": profiling.peak_memory_bytes(),
                   "val": val, "best": improved}
            meta["history"].append(row)
            meta["profile"] = {"train_seconds": profile.train_seconds,
                               "epoch_seconds": profile.epoch_seconds, "steps": profile.steps,
                               "tokens": profile.tokens, "peak_train_bytes": profile.peak_train_bytes}
            tree = ckpt_lib.checkpoint_tree(state, opt_state)
            if improved:
                ckpts.save_best(meta["global_step"], tree, meta)
            ckpts.save_latest(meta["global_step"], tree, meta)
            if parallel.is_primary():
                run_files.write_jsonl(os.path.join(workdir, run_files.METRICS_FILE), meta["history"])
            if writer is not None:
                writer.add_scalar("train/epoch_loss", stats["train_loss"], meta["global_step"])
                for k, v in val.items():
                    writer.add_scalar(f"val/{k}", v, meta["global_step"])
                writer.flush()
            _log(f"[srs_jax] epoch {epoch + 1}: loss {stats['train_loss']:.4f}, val {monitor} "
                 f"{value:.4f}{' (best)' if improved else ''}, {stats['train_seconds']:.1f}s train + "
                 f"{val_seconds:.1f}s val, {row['steps_per_s']:.2f} steps/s")
    finally:
        if writer is not None:
            writer.close()

    results = final_evaluation(config, dataset, graphdef, state, opt_state, ckpts, encode_fn)
    profile.finish()
    results.update(profile.summary())
    results.update(best_epoch=meta["best_epoch"], epochs_run=meta["epoch"],
                   stopped=meta["stopped"] or ("max_epochs" if meta["epoch"] >= config.train.max_epochs
                                                else "time budget (train.max_train_seconds)"),
                   workdir=workdir)
    if meta.get("warm_start"):  # kept in the checkpoints' meta, so a resumed run still has it
        results["warm_start"] = meta["warm_start"]
    if parallel.is_primary():
        run_files.write_json(os.path.join(workdir, run_files.RESULTS_FILE), results)
    _log(_summary_line(results, monitor))
    return results


def final_evaluation(config, dataset, graphdef, state, opt_state, ckpts, encode_fn) -> dict:
    """Val and test metrics of the best checkpoint, and of the popularity baseline."""
    tree, best_meta = ckpts.restore_best(ckpt_lib.checkpoint_tree(state, opt_state))
    state = state._replace(params=tree["params"])
    kw = dict(config=config, n_items=dataset.n_items)
    val, _ = evaluation.evaluate_model(graphdef, state, dataset.val, encode_fn=encode_fn, **kw)
    test, _ = evaluation.evaluate_model(graphdef, state, dataset.test, encode_fn=encode_fn,
                                        test_period=dataset.test_period, **kw)
    results = {"val": val, "test": test, "best_checkpoint_epoch": best_meta["epoch"]}
    if config.eval.popularity_baseline:
        results["popularity"] = {
            "val": evaluation.evaluate_popularity(dataset.item_counts, dataset.val, **kw),
            "test": evaluation.evaluate_popularity(dataset.item_counts, dataset.test,
                                                   test_period=dataset.test_period, **kw)}
    results["dataset"] = {"name": config.data.name, "n_items": int(dataset.n_items),
                          "n_users": int(dataset.n_users), "n_val_users": len(dataset.val.targets),
                          "n_test_users": len(dataset.test.targets)}
    return results


def _summary_line(results: dict, monitor: str) -> str:
    pop = results.get("popularity", {}).get("test", {})
    test = results["test"]
    keys = [monitor] + [k for k in ("coverage@10", "surprisal@10") if k in test]
    parts = [f"{k} {test[k]:.4f}" + (f" (popularity {pop[k]:.4f})" if k in pop else "") for k in keys]
    mem = results.get("peak_memory_bytes")
    mem_s = f"{mem / 2**30:.2f} GiB" if mem is not None else "n/a (backend reports none)"
    return (f"[srs_jax] test: {', '.join(parts)}; peak memory {mem_s}; "
            f"epoch {results['epoch_time_s']:.1f}s; results in {results['workdir']}/results.json")


def _tensorboard(workdir: str):
    try:
        from tensorboardX import SummaryWriter
    except ImportError:  # optional at run time: metrics.jsonl has everything
        _log("[srs_jax] tensorboardX not installed: no TensorBoard events")
        return None
    return SummaryWriter(os.path.join(workdir, "tensorboard"))
