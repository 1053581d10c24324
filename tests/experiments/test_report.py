"""Report: tables from run folders in the trainer's format, grid CSVs and catalog JSONs; plots."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from srs_jax.experiments import grid as grid_lib, reporting, tables
from tests.experiments import fake_runs
from tests.experiments.fake_runs import catalog_json

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_config(loss, bs, sl, nn, dataset="synthetic"):
    from configs import base

    c = base.get_config(dataset)
    c.loss.type, c.train.batch_size, c.model.max_len, c.loss.num_negatives = loss, bs, sl, nn
    return c


def make_runs(root, rng, n, *, memory=True):
    """``n`` run folders with random shapes / losses; returns {folder: (config, results)}."""
    runs = {}
    for i in range(n):
        loss = str(rng.choice(["ce", "ce_neg", "cce", "cce_neg"]))
        cfg = make_config(loss, int(rng.choice([64, 256, 1024])), int(rng.integers(8, 600)),
                          int(rng.integers(1, 4096)), dataset=str(rng.choice(["beauty", "zvuk"])))
        peak = int(rng.integers(1, 80 * 2**30)) if memory else None
        res = fake_runs.fake_results(rng, dataset=cfg.data.name, n_items=int(rng.integers(100, 10**6)),
                                     peak_bytes=peak)
        d = os.path.join(root, f"run{i}")
        runs[d] = (cfg, fake_runs.write_run(d, cfg, res))
    return runs


def test_run_rows_match_results(tmp_path):
    rng = np.random.default_rng(11)
    runs = make_runs(str(tmp_path), rng, 9)
    inputs = reporting.collect([str(tmp_path)])  # a folder of runs
    assert len(inputs.run_rows) == 9
    by_src = {r["source"]: r for r in inputs.run_rows}
    for d, (cfg, res) in runs.items():
        r = by_src[os.path.abspath(d)]
        assert (r["dataset"], r["loss"], r["batch_size"], r["max_len"]) == (
            cfg.data.name, cfg.loss.type, cfg.train.batch_size, cfg.model.max_len)
        # NN only for sampled losses (the reference's full-CE rows have no NN)
        assert r["num_negatives"] == (cfg.loss.num_negatives if cfg.loss.type.endswith("_neg") else None)
        for k in ("ndcg@10", "coverage@10", "surprisal@10"):
            assert r[k] == pytest.approx(res["test"][k], rel=1e-12)
        assert r["peak_memory_gb"] == pytest.approx(res["peak_memory_bytes"] / 2**30, rel=1e-12)
        assert r["epoch_s"] == pytest.approx(res["epoch_time_s"])
        assert r["step_ms"] == pytest.approx(1e3 / res["steps_per_s"])
    keys = [(r["dataset"], r["loss"], r["batch_size"], r["max_len"], r["num_negatives"] or 0)
            for r in inputs.run_rows]
    assert keys == sorted(keys)

    md = tables.to_markdown(inputs.run_rows).splitlines()
    assert md[0].startswith("| Dataset | Loss | BS | SL | NN | NDCG@10 | Coverage@10 | Surprisal@10 |")
    assert len(md) == 2 + 9 and all(line.count("|") == md[0].count("|") for line in md)
    # CSV keeps full precision and parses back to the same numbers
    back = list(csv.DictReader(tables.to_csv(inputs.run_rows).splitlines()))
    for r, b in zip(inputs.run_rows, back):
        assert float(b["NDCG@10"]) == r["ndcg@10"] and float(b["Peak memory, GB"]) == r["peak_memory_gb"]


def test_cpu_runs_have_no_memory_and_no_quality_plot(tmp_path):
    rng = np.random.default_rng(5)
    make_runs(str(tmp_path / "runs"), rng, 3, memory=False)
    out = tmp_path / "rep"
    written = reporting.write_report(reporting.collect([str(tmp_path / "runs")]), str(out))
    assert "quality_vs_memory.png" not in written
    rows = tables.to_markdown(reporting.collect([str(tmp_path / "runs")]).run_rows).splitlines()[2:]
    assert all(line.split("|")[9].strip() == "–" for line in rows)  # never 0
    report = (out / "report.md").read_text()
    assert "quality_vs_memory.png: no run" in report


def write_grid_csv(path, rng):
    cfg = make_config("cce_neg", 64, 32, 127)
    for bs in (64, 128, 256):
        for sl in (32, 64):
            point = grid_lib.GridPoint(bs, sl, 127, 42)
            if bs == 256 and sl == 64:
                row = grid_lib.result_row(point, cfg, status="oom", error="MemoryError: x")
            else:
                res = fake_runs.fake_results(rng, peak_bytes=int(bs * sl * 2**20))
                row = grid_lib.result_row(point, cfg, status="ok", results=res)
            grid_lib.append_row(path, row)


def test_grid_csv_and_catalog_json_tables_and_plots(tmp_path):
    rng = np.random.default_rng(2)
    grid_csv = str(tmp_path / "grid.csv")
    write_grid_csv(grid_csv, rng)
    cat = str(tmp_path / "cat.json")
    catalog_json(cat)
    inputs = reporting.collect([grid_csv, cat])
    assert len(inputs.run_rows) == 6 and len(inputs.catalog_rows) == 16
    oom = [r for r in inputs.run_rows if r["status"] == "oom"]
    assert len(oom) == 1 and oom[0]["ndcg@10"] is None and oom[0]["peak_memory_gb"] is None
    ok = {(r["batch_size"], r["max_len"]): r for r in inputs.run_rows if r["status"] == "ok"}
    assert ok[(128, 64)]["peak_memory_gb"] == pytest.approx(128 * 64 / 1024)
    cat_rows = {(r["loss"], r["n_items"]): r for r in inputs.catalog_rows}
    assert cat_rows[("cce", 10**7)]["peak_memory_gb"] == pytest.approx(10**7 * 256 * 16 / 2**30)
    assert cat_rows[("ce", 10**6)]["status"] == "oom" and cat_rows[("ce", 10**6)]["step_ms"] is None
    assert cat_rows[("cce_neg", 10**5)]["step_ms"] == pytest.approx((10**5 * 1e-8 + 0.01) * 1e3)

    out = tmp_path / "rep"
    written = reporting.write_report(inputs, str(out))
    for name in ("runs.md", "runs.csv", "catalog.md", "catalog.csv", "report.md",
                 "memory_vs_catalog.png", "step_time_vs_catalog.png", "quality_vs_memory.png"):
        assert name in written and os.path.getsize(written[name]) > 0, name
    for name in ("memory_vs_catalog.png", "step_time_vs_catalog.png", "quality_vs_memory.png"):
        with open(written[name], "rb") as f:
            assert f.read(8) == PNG_MAGIC
    assert not [n for n in os.listdir(out) if "tmp" in n]
    md = (out / "catalog.md").read_text()
    assert "| ce | 1,000,000 | oom |" in md and "| cce | 10,000,000 | ok |" in md


def test_catalog_plot_from_runs_of_several_catalog_sizes(tmp_path):
    """Without a catalog JSON, runs on >= 2 catalog sizes still give the against-catalog plots."""
    rng = np.random.default_rng(9)
    make_runs(str(tmp_path / "runs"), rng, 6)
    written = reporting.write_report(reporting.collect([str(tmp_path / "runs")]), str(tmp_path / "o"))
    assert {"memory_vs_catalog.png", "step_time_vs_catalog.png", "quality_vs_memory.png"} <= set(written)


def test_one_run_fills_the_training_curves_and_catalog_plots(tmp_path):
    """A single run folder is enough for every plot but the catalog study's."""
    rng = np.random.default_rng(5)
    make_runs(str(tmp_path / "runs"), rng, 1)
    inputs = reporting.collect([str(tmp_path / "runs")])
    assert len(inputs.curves) == 1 and len(inputs.curves[0][1]) == 3
    written = reporting.write_report(inputs, str(tmp_path / "o"))
    for name in ("training_curves.png", "step_time_vs_catalog.png", "quality_vs_memory.png"):
        with open(written[name], "rb") as f:
            assert f.read(8) == PNG_MAGIC, name
    assert "training_curves" in (tmp_path / "o" / "report.md").read_text()


def test_catalog_lines_split_by_batch_and_length(tmp_path, monkeypatch):
    """Runs of different batch size or sequence length are separate lines of one loss."""
    from srs_jax.experiments import plots

    rows = [{"loss": "cce", "batch_size": bs, "max_len": sl, "n_items": n, "status": "ok",
             "step_ms": 1.0 + n / 1e3}
            for bs, sl in ((64, 32), (128, 32), (64, 200)) for n in (100, 1000, 5000)]
    drawn = []
    plt = plots.pyplot()
    real = plt.Axes.plot
    monkeypatch.setattr(plt.Axes, "plot", lambda self, *a, **k: drawn.append(k["label"]) or
                        real(self, *a, **k))
    assert plots.versus_catalog(rows, lambda r: r["step_ms"], "ms", "t", str(tmp_path / "p.png"))
    assert sorted(drawn) == ["cce, BS 128, SL 32", "cce, BS 64, SL 200", "cce, BS 64, SL 32"]


def test_bad_inputs_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match="nothing to report"):
        reporting.collect([])
    with pytest.raises(FileNotFoundError, match="holds no finished run"):
        reporting.collect([str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="not found"):
        reporting.collect([str(tmp_path / "missing.json")])
    (tmp_path / "x.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a catalog-scale JSON"):
        reporting.collect([str(tmp_path / "x.json")])
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "results.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        reporting.collect([str(tmp_path / "r")])


def test_missing_matplotlib_is_one_line_error(monkeypatch):
    from srs_jax.experiments import plots

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(ImportError, match=r"srs-jax\[report\]"):
        plots.pyplot()


def test_cli(tmp_path):
    rng = np.random.default_rng(4)
    make_runs(str(tmp_path / "runs"), rng, 2)
    cat = str(tmp_path / "cat.json")
    catalog_json(cat, peak=False)
    p = subprocess.run([sys.executable, "-m", "experiments.report", str(tmp_path / "runs"), cat,
                        f"--out={tmp_path / 'o'}"], cwd=ROOT, capture_output=True, text=True,
                       timeout=200)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "| Dataset | Loss | BS |" in p.stdout and "XLA estimate" in p.stdout
    assert (tmp_path / "o" / "memory_vs_catalog.png").exists()
    p = subprocess.run([sys.executable, "-m", "experiments.report", str(tmp_path / "nope")],
                       cwd=ROOT, capture_output=True, text=True, timeout=200)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines() == [p.stderr.strip()] and p.stderr.startswith("error: ")
    assert "nope" in p.stderr
