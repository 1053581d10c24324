"""The reference's grid search (MemoryEfficientSRS): batch size x max length x negatives.

Points run in the reference's loop order (batch size -> length -> negatives -> launch, seed =
``config.seed + launch``). Every point appends one row to a CSV that is rewritten atomically
(temporary file + rename), so a killed search never leaves a half-written row; a point whose key
``(batch_size, max_len, num_negatives, seed)`` is already in the CSV is skipped, which makes the
search resumable. An out-of-memory point is recorded with ``status = "oom"`` and the search goes on. Points recorded as ``error`` (a bug, a crashed worker) are retried by a rerun;
``retry_failed`` also retries ``oom`` and ``nonfinite`` ones.

By default every point trains in its own Python process (``isolate=True``): JAX cannot reset the
device's peak-memory counter, so only a fresh process gives each point its own peak memory, and
an OOM cannot leave fragments behind for the next point.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import datetime
import gc
import importlib
import io
import json
import math
import os
import subprocess
import sys
from typing import Callable, Iterable, NamedTuple

import jax
import ml_collections

from srs_jax.config.names import SAMPLED_LOSSES
from srs_jax.experiments import errors
from srs_jax.training import run_files

# Full-softmax losses have no negatives axis: their grid collapses to num_negatives = 0.

KEY_COLUMNS = ("batch_size", "max_len", "num_negatives", "seed")
COLUMNS = (
    "dataset", "model", "loss", *KEY_COLUMNS, "status", "error", "n_items", "epochs_run",
    "best_epoch", "epoch_time_s", "epoch_train_time_s", "step_time_s", "steps_per_s",
    "tokens_per_s", "compile_s", "peak_memory_gb", "peak_memory_train_gb", "peak_memory_scope",
    "device", "backend", "workdir", "finished_at")
STATUSES = ("ok", "oom", "nonfinite", "error")
STATUS_FILE = "grid_status.json"  # written by a point's worker process when it fails
GIB = 2.0**30  # the reference's "GB" is GiB (torch.cuda.max_memory_allocated / 1024**3)


def default_grid() -> ml_collections.ConfigDict:
    """The reference grid (MemoryEfficientSRS): 7 x 6 x 8 points, one launch."""
    return ml_collections.ConfigDict(dict(
        batch_size=(16, 32, 64, 128, 256, 512, 1024),
        max_len=(32, 64, 128, 256, 512, 1024),
        num_negatives=(32, 64, 128, 256, 512, 1024, 1512, 2048),
        launches=1))


class GridPoint(NamedTuple):
    batch_size: int
    max_len: int
    num_negatives: int  # 0 for losses without negatives
    seed: int

    @property
    def name(self) -> str:
        return f"bs{self.batch_size}_sl{self.max_len}_nn{self.num_negatives}_seed{self.seed}"


def _int_list(grid, field: str) -> list[int]:
    value = grid[field]
    values = list(value) if isinstance(value, (tuple, list)) else [value]
    try:
        out = [int(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(f"grid.{field}={value!r} is not a list of integers: pass e.g. "
                         f"--grid.{field}=16,32") from None
    if not out or min(out) < 1:
        raise ValueError(f"grid.{field}={value!r} must be a non-empty list of positive integers")
    return list(dict.fromkeys(out))  # drop repeats, keep order


def grid_points(grid, base_config) -> list[GridPoint]:
    """All points in the reference's loop order; one NN value (0) for losses without negatives."""
    sampled = base_config.loss.type in SAMPLED_LOSSES
    negatives = _int_list(grid, "num_negatives") if sampled else [0]
    launches = int(grid.get("launches", 1))
    if launches < 1:
        raise ValueError(f"grid.launches={launches} must be >= 1")
    seed0 = int(base_config.seed)
    return [GridPoint(b, l, n, seed0 + i)
            for b in _int_list(grid, "batch_size") for l in _int_list(grid, "max_len")
            for n in negatives for i in range(launches)]


def point_config(base_config, point: GridPoint) -> ml_collections.ConfigDict:
    """A copy of ``base_config`` with the point's batch size, length, negatives and seed."""
    c = ml_collections.ConfigDict(base_config.to_dict())
    c.train.batch_size = point.batch_size
    c.model.max_len = point.max_len
    c.seed = point.seed
    if point.num_negatives:
        c.loss.num_negatives = point.num_negatives
    return c


# --------------------------------------------------------------------------------------- CSV


def row_key(row: dict) -> tuple[int, ...]:
    return tuple(int(float(row[k])) for k in KEY_COLUMNS)


def read_rows(csv_path: str) -> list[dict]:
    """Rows of the grid CSV (``[]`` if it does not exist yet)."""
    if not os.path.exists(csv_path):
        return []
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in KEY_COLUMNS + ("status",) if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{csv_path} is not a grid CSV (no column {missing[0]!r}): pass "
                             "another --csv or move that file away")
        return list(reader)


def _header(rows: Iterable[dict]) -> list[str]:
    extra = sorted({k for r in rows for k in r} - set(COLUMNS))
    return list(COLUMNS) + extra


def write_rows(csv_path: str, rows: list[dict]) -> None:
    """Writes all ``rows`` to ``csv_path`` atomically (temporary file in the same folder + rename)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=_header(rows), restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    run_files.write_text(csv_path, buf.getvalue())


def append_row(csv_path: str, row: dict) -> None:
    """Adds ``row``, replacing an earlier row with the same key (a retried failure)."""
    rows = [r for r in read_rows(csv_path) if row_key(r) != row_key(row)]
    write_rows(csv_path, rows + [row])


# Outcomes that a rerun would repeat (same shapes, same seed): skipped on resume. An ``error``
# (a bug, a crashed worker) is retried by every rerun; ``retry_failed`` retries all but ``ok``.
FINAL_STATUSES = ("ok", "oom", "nonfinite")


def done_keys(rows: list[dict], *, retry_failed: bool = False) -> set[tuple[int, ...]]:
    """Keys of the recorded points that a rerun skips."""
    final = ("ok",) if retry_failed else FINAL_STATUSES
    return {row_key(r) for r in rows if r["status"] in final}


def _gb(n):
    return None if n is None else n / GIB


def result_row(point: GridPoint, config, *, status: str, results: dict | None = None,
               error: str = "", isolated: bool = True) -> dict:
    """One CSV row: the point, its status, profiling fields and every ``test_<metric>@<k>``."""
    if status not in STATUSES:
        raise ValueError(f"status {status!r}: use one of {STATUSES}")
    row = {"dataset": config.data.name, "model": config.model.name, "loss": config.loss.type,
           **point._asdict(), "status": status, "error": error,
           "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    if results:
        steps_per_s = results.get("steps_per_s")
        row.update(
            n_items=results.get("dataset", {}).get("n_items"),
            epochs_run=results.get("epochs_run"), best_epoch=results.get("best_epoch"),
            epoch_time_s=results.get("epoch_time_s"),
            epoch_train_time_s=results.get("epoch_train_time_s"),
            step_time_s=(1.0 / steps_per_s) if steps_per_s else None,
            steps_per_s=steps_per_s, tokens_per_s=results.get("tokens_per_s"),
            compile_s=results.get("compile_s"),
            peak_memory_gb=_gb(results.get("peak_memory_bytes")),
            peak_memory_train_gb=_gb(results.get("peak_memory_train_bytes")),
            peak_memory_scope="run" if isolated else "process (includes earlier points)",
            device=results.get("device"), backend=results.get("backend"),
            workdir=results.get("workdir"))
        for split in ("test", "val"):
            for k, v in sorted(results.get(split, {}).items()):
                row[f"{split}_{k}"] = v
    return {k: ("" if v is None or (isinstance(v, float) and not math.isfinite(v)) else v)
            for k, v in row.items()}


# ----------------------------------------------------------------------------------- running


def load_train_fn(path: str = "srs_jax.training.loop:train") -> Callable:
    """``module:function`` -> the function (the trainer's ``train(config, workdir, resume)``)."""
    module, _, name = path.partition(":")
    if not name:
        raise ValueError(f"train function {path!r}: use the form 'package.module:function'")
    fn = getattr(importlib.import_module(module), name, None)
    if not callable(fn):
        raise ValueError(f"train function {path!r}: {module} has no function {name!r}")
    return fn


def _load_results(workdir: str) -> dict | None:
    path = os.path.join(workdir, "results.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _classify(error: BaseException) -> str:
    if errors.is_out_of_memory(error):
        return "oom"
    if isinstance(error, FloatingPointError):  # the trainer's NonFiniteLossError
        return "nonfinite"
    return "error"


def run_point_here(config, workdir: str, train_fn: Callable) -> tuple[str, dict | None, str]:
    """Trains one point in this process: ``(status, results or None, error message)``."""
    try:
        results = train_fn(config, workdir, resume=True)
        return "ok", results, ""
    except KeyboardInterrupt:
        raise
    except Exception as e:  # recorded in the CSV; the search goes on
        return _classify(e), None, errors.short_message(e)
    finally:
        _free_device_memory()


def _free_device_memory() -> None:
    gc.collect()
    jax.clear_caches()


def run_worker(config_json: str, workdir: str, train_fn_path: str) -> int:
    """Entry point of a point's own process: trains, or writes ``grid_status.json`` on failure."""
    with open(config_json) as f:
        config = ml_collections.ConfigDict(json.load(f))
    status, _, error = run_point_here(config, workdir, load_train_fn(train_fn_path))
    if status != "ok":
        run_files.write_json(os.path.join(workdir, STATUS_FILE), {"status": status, "error": error})
        return 3
    return 0


def run_point_isolated(config, workdir: str, train_fn_path: str,
                       worker_module: str = "experiments.grid_search") -> tuple[str, dict | None, str]:
    """Trains one point in a child process (``python -m <worker_module> --worker ...``)."""
    os.makedirs(workdir, exist_ok=True)
    status_path = os.path.join(workdir, STATUS_FILE)
    if os.path.exists(status_path):
        os.remove(status_path)  # a retried point: its old failure is not this attempt's
    config_json = os.path.join(workdir, "grid_point_config.json")
    run_files.write_text(config_json, config.to_json_best_effort(indent=2) + "\n")
    cmd = [sys.executable, "-m", worker_module, "--worker", f"--point_config={config_json}",
           f"--workdir={workdir}", f"--train_fn={train_fn_path}"]
    # Stream the child's log (training progress) and keep its tail to classify a hard crash.
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, errors="replace")
    tail: collections.deque[str] = collections.deque(maxlen=40)
    for line in proc.stderr:
        sys.stderr.write(line)
        tail.append(line)
    proc.wait()
    stderr = "".join(tail)
    if os.path.exists(status_path):
        with open(status_path) as f:
            st = json.load(f)
        return st["status"], None, st["error"]
    results = _load_results(workdir)
    if proc.returncode == 0 and results is not None:
        return "ok", results, ""
    last = " ".join(stderr.strip().splitlines()[-1:])
    oom = any(m in stderr for m in ("RESOURCE_EXHAUSTED", "out of memory", "MemoryError"))
    return ("oom" if oom else "error"), None, f"worker exited with code {proc.returncode}: {last}"[:300]


@dataclasses.dataclass
class GridSummary:
    csv_path: str
    ran: list[GridPoint]
    skipped: list[GridPoint]
    statuses: dict[str, int]


def run_grid(base_config, grid, out_dir: str, *, csv_path: str | None = None,
             train_fn: Callable | str = "srs_jax.training.loop:train", isolate: bool = True,
             retry_failed: bool = False, log: Callable[[str], None] = print) -> GridSummary:
    """Runs every grid point not yet in the CSV; each point trains into ``out_dir/runs/<name>``.

    ``train_fn`` is ``train(config, workdir, resume)`` or its ``"module:function"`` path (a
    path is required with ``isolate=True``, where each point runs in a child process).
    """
    csv_path = csv_path or os.path.join(out_dir, "grid.csv")
    points = grid_points(grid, base_config)
    skip = done_keys(read_rows(csv_path), retry_failed=retry_failed)
    if isolate and not isinstance(train_fn, str):
        raise ValueError("isolate=True runs points in child processes: pass train_fn as "
                         "'module:function', or isolate=False")
    # Resolved here even when the points run in child processes: a wrong path fails once, now.
    fn = load_train_fn(train_fn) if isinstance(train_fn, str) else train_fn
    ran, skipped, statuses = [], [], {}
    for i, point in enumerate(points):
        if tuple(point) in skip:
            skipped.append(point)
            continue
        config = point_config(base_config, point)
        workdir = os.path.join(out_dir, "runs", point.name)
        log(f"[grid] point {i + 1}/{len(points)}: {point.name} -> {workdir}")
        results = _load_results(workdir)  # finished before a crash, but its row never written
        if results is not None:
            status, error = "ok", ""
        elif isolate:
            status, results, error = run_point_isolated(config, workdir, train_fn)
        else:
            status, results, error = run_point_here(config, workdir, fn)
        append_row(csv_path, result_row(point, config, status=status, results=results,
                                        error=error, isolated=isolate))
        statuses[status] = statuses.get(status, 0) + 1
        ran.append(point)
        log(f"[grid] {point.name}: {status}{(' (' + error + ')') if error else ''}")
    return GridSummary(csv_path, ran, skipped, statuses)
