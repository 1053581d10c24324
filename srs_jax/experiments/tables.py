"""Result tables: rows from run folders, grid CSVs and catalog-scale JSONs, as Markdown and CSV.

One row per run: the reference's columns (Dataset, Loss, BS, SL, NN, NDCG@10, Coverage@10,
Surprisal@10, peak memory GB, epoch s; MemoryEfficientSRS's tables) plus step time and status. "GB"
is GiB (2^30 bytes), as the reference's ``max_memory_allocated / 1024**3``. Values missing from a
run (no memory statistics on CPU, a point that ran out of memory) are empty, never 0.
"""

from __future__ import annotations

import csv
import io
import math
import os
from typing import Iterable, NamedTuple

from srs_jax.config.names import SAMPLED_LOSSES
from srs_jax.experiments import grid as grid_lib
from srs_jax.training import run_files

GIB = 2.0**30


class Column(NamedTuple):
    key: str
    header: str
    fmt: str  # format spec for numbers, e.g. ".4f"


RUN_COLUMNS = (
    Column("dataset", "Dataset", ""), Column("loss", "Loss", ""), Column("batch_size", "BS", "d"),
    Column("max_len", "SL", "d"), Column("num_negatives", "NN", "d"),
    Column("ndcg@10", "NDCG@10", ".4f"), Column("coverage@10", "Coverage@10", ".4f"),
    Column("surprisal@10", "Surprisal@10", ".4f"), Column("peak_memory_gb", "Peak memory, GB", ".3g"),
    Column("epoch_s", "Epoch, s", ".1f"), Column("step_ms", "Step, ms", ".1f"),
    Column("status", "Status", ""))
CATALOG_COLUMNS = (
    Column("loss", "Loss", ""), Column("n_items", "Items", ",d"), Column("status", "Status", ""),
    Column("peak_memory_gb", "Peak memory, GB", ".3g"), Column("resident_gb", "State, GB", ".3g"),
    Column("compiled_memory_gb", "XLA estimate, GB", ".3g"), Column("step_ms", "Step, ms", ".1f"),
    Column("tokens_per_s", "Tokens/s", ",.0f"))


def _num(x):
    """float or None from JSON/CSV values ('' and None are missing; inf/nan are missing)."""
    if x is None or x == "":
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _int(x):
    v = _num(x)
    return None if v is None else int(v)


def _gb(n):
    v = _num(n)
    return None if v is None else v / GIB


# ------------------------------------------------------------------------------------ sources


def find_run_dirs(path: str) -> list[str]:
    """``path`` if it holds results.json, else its direct subfolders (and ``runs/*``) that do."""
    if os.path.exists(os.path.join(path, "results.json")):
        return [path]
    found = []
    for parent in (path, os.path.join(path, "runs")):
        if os.path.isdir(parent):
            for name in sorted(os.listdir(parent)):
                d = os.path.join(parent, name)
                if os.path.exists(os.path.join(d, "results.json")):
                    found.append(d)
    return found


def run_row(workdir: str) -> dict:
    """The table row of a finished run folder (``config.json`` + ``results.json``)."""
    paths = {n: os.path.join(workdir, n) for n in ("config.json", "results.json")}
    for name, path in paths.items():
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} not found: pass run folders written by "
                                    "experiments.train (finished runs have results.json)")
    config = run_files.read_json(paths["config.json"], what="the run's config")
    results = run_files.read_json(paths["results.json"], what="the run's results")
    test = results.get("test", {})
    loss = config["loss"]["type"]
    steps_per_s = _num(results.get("steps_per_s"))
    return {
        "dataset": results.get("dataset", {}).get("name", config["data"]["name"]),
        "loss": loss, "batch_size": _int(config["train"]["batch_size"]),
        "max_len": _int(config["model"]["max_len"]),
        "num_negatives": _int(config["loss"].get("num_negatives")) if loss in SAMPLED_LOSSES else None,
        "n_items": _int(results.get("dataset", {}).get("n_items")),
        "ndcg@10": _num(test.get("ndcg@10")), "hitrate@10": _num(test.get("hitrate@10")),
        "coverage@10": _num(test.get("coverage@10")), "surprisal@10": _num(test.get("surprisal@10")),
        "peak_memory_gb": _gb(results.get("peak_memory_bytes")),
        "peak_memory_train_gb": _gb(results.get("peak_memory_train_bytes")),
        "epoch_s": _num(results.get("epoch_time_s")),
        "epoch_train_s": _num(results.get("epoch_train_time_s")),
        "step_ms": 1e3 / steps_per_s if steps_per_s else None,
        "tokens_per_s": _num(results.get("tokens_per_s")), "status": "ok",
        "device": results.get("device"), "source": os.path.abspath(workdir),
    }


def run_label(workdir: str) -> str:
    """A short name of a run folder for plot legends (its folder name)."""
    return os.path.basename(os.path.normpath(workdir))


def run_history(workdir: str) -> list[dict]:
    """The per-epoch rows of ``<workdir>/metrics.jsonl`` ([] when absent)."""
    return run_files.read_jsonl(os.path.join(workdir, run_files.METRICS_FILE), what="metrics log")


def grid_rows(csv_path: str) -> list[dict]:
    """Table rows of a grid CSV (``experiments.grid_search``); failed points keep their status."""
    out = []
    for r in grid_lib.read_rows(csv_path):
        step_s = _num(r.get("step_time_s"))
        out.append({
            "dataset": r.get("dataset"), "loss": r.get("loss"),
            "batch_size": _int(r["batch_size"]), "max_len": _int(r["max_len"]),
            "num_negatives": _int(r["num_negatives"]) or None, "n_items": _int(r.get("n_items")),
            "ndcg@10": _num(r.get("test_ndcg@10")), "hitrate@10": _num(r.get("test_hitrate@10")),
            "coverage@10": _num(r.get("test_coverage@10")),
            "surprisal@10": _num(r.get("test_surprisal@10")),
            "peak_memory_gb": _num(r.get("peak_memory_gb")),
            "peak_memory_train_gb": _num(r.get("peak_memory_train_gb")),
            "epoch_s": _num(r.get("epoch_time_s")), "epoch_train_s": _num(r.get("epoch_train_time_s")),
            "step_ms": step_s * 1e3 if step_s else None, "tokens_per_s": _num(r.get("tokens_per_s")),
            "status": r["status"], "device": r.get("device"),
            "source": f"{os.path.abspath(csv_path)}#seed={r['seed']}",
            "workdir": os.path.abspath(r["workdir"]) if r.get("workdir") else None,
        })
    return out


def catalog_rows(study: dict) -> list[dict]:
    """Table rows of a catalog-scale result (``srs_jax.experiments.catalog.run_study``)."""
    out = []
    for p in study["points"]:
        step = _num(p.get("median_step_s"))
        out.append({"loss": p["loss"], "n_items": int(p["n_items"]), "status": p["status"],
                    "peak_memory_gb": _gb(p.get("peak_memory_bytes")),
                    "resident_gb": _gb(p.get("resident_bytes")),
                    "compiled_memory_gb": _gb(p.get("compiled_memory_bytes")),
                    "step_ms": step * 1e3 if step else None,
                    "tokens_per_s": _num(p.get("tokens_per_s")), "error": p.get("error", "")})
    order = {l: i for i, l in enumerate(("ce", "ce_neg", "cce", "cce_neg"))}
    return sorted(out, key=lambda r: (order.get(r["loss"], 99), r["loss"], r["n_items"]))


def sort_runs(rows: Iterable[dict]) -> list[dict]:
    key = lambda r: (str(r["dataset"]), str(r["loss"]), r["batch_size"] or 0, r["max_len"] or 0,  # noqa: E731
                     r["num_negatives"] or 0)
    return sorted(rows, key=key)


# ------------------------------------------------------------------------------------ writers


def _cell(value, fmt: str) -> str:
    if value is None or value == "":
        return "–" if fmt else ""
    if fmt and isinstance(value, (int, float)):
        return format(int(value) if fmt.endswith("d") else value, fmt)
    return str(value)


def to_markdown(rows: list[dict], columns=RUN_COLUMNS) -> str:
    """A GitHub Markdown table; missing numbers show as an en dash."""
    lines = ["| " + " | ".join(c.header for c in columns) + " |",
             "|" + "|".join("---" if not c.fmt else "---:" for c in columns) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(c.key), c.fmt) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict], columns=RUN_COLUMNS) -> str:
    """CSV with the table's headers and full-precision values (missing = empty cell)."""
    keys = [c.key for c in columns] + sorted({k for r in rows for k in r} - {c.key for c in columns})
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([next((c.header for c in columns if c.key == k), k) for k in keys])
    for r in rows:
        w.writerow(["" if r.get(k) is None else r.get(k) for k in keys])
    return buf.getvalue()
