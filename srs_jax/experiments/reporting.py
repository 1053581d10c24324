"""Builds a report folder from run folders, grid CSVs and catalog-scale JSONs.

Written (each atomically): ``runs.md`` / ``runs.csv`` (one row per run or grid point),
``catalog.md`` / ``catalog.csv`` (one row per (loss, catalog size)), ``report.md`` (all tables and
the plots), and PNGs: ``memory_vs_catalog.png``, ``step_time_vs_catalog.png`` (one line per loss,
batch size and sequence length; any set of runs with a catalog size), ``quality_vs_memory.png``
and ``training_curves.png`` (from the runs' ``metrics.jsonl``; one run is enough). A plot with no data (e.g. peak memory of CPU runs, which report none)
is left out and the reason is listed in ``report.md``.
"""

from __future__ import annotations

import dataclasses
import os

from srs_jax.experiments import catalog, tables
from srs_jax.experiments import plots as plots_lib
from srs_jax.training import run_files


@dataclasses.dataclass
class Inputs:
    run_rows: list[dict]
    catalog_rows: list[dict]
    catalog_meta: list[dict]
    curves: list = dataclasses.field(default_factory=list)  # (label, metrics.jsonl rows) per run


def collect(paths: list[str]) -> Inputs:
    """Sorts ``paths`` into run folders (or folders of runs), grid ``.csv`` and catalog ``.json``."""
    if not paths:
        raise ValueError("nothing to report: pass run folders, grid CSVs or catalog-scale JSONs")
    runs, cat, meta, curves = [], [], [], []
    for p in paths:
        if os.path.isdir(p):
            dirs = tables.find_run_dirs(p)
            if not dirs:
                raise FileNotFoundError(f"{p} holds no finished run (no results.json in it or its "
                                        "subfolders): pass run folders of experiments.train")
            runs += [tables.run_row(d) for d in dirs]
            curves += [(tables.run_label(d), tables.run_history(d)) for d in dirs]
        elif p.endswith(".csv"):
            runs += tables.grid_rows(_existing(p))
        elif p.endswith(".json"):
            study = catalog.load_study(_existing(p))
            cat += tables.catalog_rows(study)
            meta.append(study["meta"])
        else:
            raise FileNotFoundError(f"{p}: not a folder, .csv or .json; pass run folders, grid "
                                    "CSVs (experiments.grid_search) or catalog JSONs")
    # A grid point's run folder given as well (e.g. the grid's --out): keep the CSV row only.
    in_grid = {r["workdir"] for r in runs if r.get("workdir")}
    runs = [r for r in runs if r.get("workdir") or r["source"] not in in_grid]
    return Inputs(tables.sort_runs(runs), cat, meta, curves)


def _existing(path: str) -> str:
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found")
    return path


def _catalog_source(inputs: Inputs) -> list[dict]:
    """Rows for the against-catalog plots: the catalog study, else every run with a catalog size."""
    if inputs.catalog_rows:
        return inputs.catalog_rows
    return [r for r in inputs.run_rows if r.get("n_items")]


def _meta_lines(meta: dict) -> str:
    keys = ("date_utc", "device", "backend", "jax", "batch_size", "max_len", "hidden",
            "num_negatives", "sharing", "compute_dtype", "steps", "warmup", "command")
    return "; ".join(f"{k}: {meta[k]}" for k in keys if k in meta)


def write_report(inputs: Inputs, out_dir: str, *, plots: bool = True) -> dict[str, str]:
    """Writes tables (and plots) into ``out_dir``; returns ``{name: path}`` of what was written."""
    os.makedirs(out_dir, exist_ok=True)
    written: dict[str, str] = {}
    notes: list[str] = []
    md = ["# Experiment report", ""]

    def put(name: str, text: str) -> None:
        path = os.path.join(out_dir, name)
        run_files.write_text(path, text)
        written[name] = path

    if inputs.run_rows:
        put("runs.md", tables.to_markdown(inputs.run_rows))
        put("runs.csv", tables.to_csv(inputs.run_rows))
        md += ["## Runs", "", "Test metrics of the best checkpoint; peak memory in GB = GiB "
               "(whole run, training and evaluation); epoch s = mean epoch time including "
               "validation; step ms = 1000 / steps per second; – = not available.", "",
               tables.to_markdown(inputs.run_rows)]
    if inputs.catalog_rows:
        put("catalog.md", tables.to_markdown(inputs.catalog_rows, tables.CATALOG_COLUMNS))
        put("catalog.csv", tables.to_csv(inputs.catalog_rows, tables.CATALOG_COLUMNS))
        md += ["## Catalog scale", ""] + [f"- {_meta_lines(m)}" for m in inputs.catalog_meta] + [
            "", "Peak memory = device peak_bytes_in_use; state = bytes in use before the first step "
            "(model, Adam moments, batches); XLA estimate = compile-time arguments + outputs + "
            "temporaries; step = median step time.", "",
            tables.to_markdown(inputs.catalog_rows, tables.CATALOG_COLUMNS)]
    if plots:
        cat_rows = _catalog_source(inputs)
        images = []
        if cat_rows:
            def mem(r):
                return r.get("peak_memory_gb")

            name = "memory_vs_catalog.png"
            label = "peak memory, GB (GiB)"
            if not any(mem(r) for r in cat_rows if r.get("status") == "ok"):
                mem = lambda r: r.get("compiled_memory_gb")  # noqa: E731  (CPU: no runtime peak)
                label = "XLA memory estimate, GB (GiB): backend reports no peak"
            images.append((name, plots_lib.versus_catalog(
                cat_rows, mem, label, "memory vs catalog size", os.path.join(out_dir, name))))
            name = "step_time_vs_catalog.png"
            images.append((name, plots_lib.versus_catalog(
                cat_rows, lambda r: r.get("step_ms"), "step time, ms", "step time vs catalog size",
                os.path.join(out_dir, name))))
        else:
            notes.append("memory / step time vs catalog size: no catalog-scale JSON and no run "
                         "with a catalog size")
        if inputs.run_rows:
            name = "quality_vs_memory.png"
            images.append((name, plots_lib.quality_vs_memory(inputs.run_rows,
                                                             os.path.join(out_dir, name))))
        if inputs.curves:
            name = "training_curves.png"
            images.append((name, plots_lib.training_curves(inputs.curves,
                                                           os.path.join(out_dir, name))))
        for name, path in images:
            if path:
                written[name] = path
                md += [f"![{name[:-4]}]({name})", ""]
            else:
                notes.append(f"{name}: no run or point has the values it needs (e.g. peak "
                             "memory on CPU is not reported)")
    if notes:
        md += ["## Not plotted", ""] + [f"- {n}" for n in notes] + [""]
    put("report.md", "\n".join(md) + "\n")
    return written
