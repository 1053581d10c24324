"""Catalog-scale study: real training steps at tiny shapes (CPU), OOM / skip / budget bookkeeping,
the per-loss worker processes and the JSON it writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from srs_jax.config import run_config
from srs_jax.experiments import catalog

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = dict(batch_size=4, max_len=8, hidden=16, num_negatives=7)


def base_config():
    c = run_config("synthetic")
    c.model.num_blocks = 1
    c.model.dropout = 0.0
    return c


def test_real_steps_ce_equals_cce_and_memory_grows():
    """CE and CCE are the same loss: same init and batch give the same first loss (fp32);
    XLA's memory estimate grows with the catalog (the [V, H] table, Adam moments, gradients)."""
    cfg = base_config()
    out = {}
    for loss, v in (("ce", 300), ("cce", 300), ("cce", 3000)):
        c = catalog.point_config(cfg, loss, **TINY)
        assert (c.train.batch_size, c.model.max_len, c.model.hidden) == (4, 8, 16)
        assert c.loss.num_negatives == 0 and c.model.compute_dtype == "float32"
        out[loss, v] = catalog.measure_point(c, v, steps=2, warmup=1)
    for p in out.values():
        assert p["status"] == "ok" and p["finite"] and len(p["step_times_s"]) == 2
        assert p["median_step_s"] > 0 and p["tokens_per_s"] == pytest.approx(32 / p["median_step_s"])
        assert p["peak_memory_bytes"] is None and p["resident_bytes"] is None  # CPU: none, never 0
    # only the item table depends on V: one H-row per extra item
    assert out["cce", 3000]["n_params"] - out["cce", 300]["n_params"] == 2700 * 16
    assert out["ce", 300]["loss_first"] == pytest.approx(out["cce", 300]["loss_first"], rel=1e-5)
    # the first loss of random ids is close to log(V) at init
    assert abs(out["cce", 3000]["loss_first"] - np.log(3000)) < 1.0
    est = {k: p["compiled_memory_bytes"] for k, p in out.items()}
    assert est["cce", 3000] - est["cce", 300] >= 3 * 2700 * 16 * 4  # params + 2 Adam moments


def test_oom_skips_larger_catalogs_and_budget(monkeypatch):
    """An OOM is a result: recorded, larger catalogs of that loss skipped, other losses go on."""
    calls = []

    def fake_measure(config, n_items, steps, warmup):
        calls.append((config.loss.type, n_items))
        if config.loss.type == "ce" and n_items >= 1000:
            import jax

            raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating")
        if config.loss.type == "cce_neg" and n_items == 50:
            raise KeyError("a bug")
        return {"status": "ok", "error": "", "median_step_s": 0.1, "peak_memory_bytes": n_items}

    monkeypatch.setattr(catalog, "measure_point", fake_measure)
    monkeypatch.setattr(catalog, "_free", lambda: None)
    rec = []
    for loss in ("ce", "cce_neg"):
        catalog.run_loss(base_config(), loss, [10_000, 50, 1000], shape=TINY, steps=1, warmup=0,
                         emit=rec.append, log=lambda m: None)
    got = {(r["loss"], r["n_items"]): r["status"] for r in rec}
    assert got == {("ce", 50): "ok", ("ce", 1000): "oom", ("ce", 10_000): "skipped",
                   ("cce_neg", 50): "error", ("cce_neg", 1000): "ok", ("cce_neg", 10_000): "ok"}
    assert ("ce", 10_000) not in calls  # skipped points never run
    assert [r["n_items"] for r in rec[:3]] == [50, 1000, 10_000]  # ascending
    rec.clear()
    catalog.run_loss(base_config(), "cce", [10, 20], shape=TINY, steps=1, warmup=0, emit=rec.append,
                     deadline=0.0, log=lambda m: None)
    assert [r["status"] for r in rec] == ["not_run", "not_run"]


def test_jsonl_ignores_a_line_cut_by_a_crash(tmp_path):
    path = str(tmp_path / "p.jsonl")
    catalog.append_jsonl(path, {"loss": "ce", "n_items": 1})
    with open(path, "a") as f:
        f.write('{"loss": "cce", "n_ite')
    assert catalog.read_jsonl(path) == [{"loss": "ce", "n_items": 1}]


def test_bad_arguments():
    with pytest.raises(ValueError, match="choose from"):
        catalog.run_study(base_config(), losses=["bce"], out_path="/tmp/x.json")
    with pytest.raises(ValueError, match="catalog sizes"):
        catalog.run_study(base_config(), catalogs=[1], out_path="/tmp/x.json")
    with pytest.raises(ValueError, match="not in the study"):
        catalog.point_config(base_config(), "sce", **TINY)


def test_cli_small_worker_process(tmp_path):
    """The command as the GPU script runs it (one worker process per loss), at tiny sizes."""
    out = tmp_path / "cat.json"
    p = subprocess.run(
        [sys.executable, "-m", "experiments.catalog_scale", "--small", "--losses=cce_neg",
         "--catalogs=64", "--batch_size=4", "--max_len=8", "--hidden", "16", "--steps=1",
         "--config.model.num_blocks=1", f"--out={out}"],
        cwd=ROOT, capture_output=True, text=True, timeout=400, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert p.returncode == 0, p.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["meta"]["hidden"] == 16 and data["meta"]["num_negatives"] == 15
    assert data["meta"]["isolate"] == "loss" and data["meta"]["backend"] == "cpu"
    [pt] = data["points"]
    assert (pt["loss"], pt["n_items"], pt["status"]) == ("cce_neg", 64, "ok"), pt
    assert pt["n_params"] > 64 * 16 and pt["compiled_memory_bytes"] > 0
    assert "| cce_neg | 64 | ok |" in p.stdout
    assert sorted(os.listdir(tmp_path)) == ["cat.json"]  # the points JSONL is removed


def test_parent_bookkeeping_of_dying_workers_and_no_device_in_parent(tmp_path):
    """Workers that die: an allocation failure becomes ``oom`` (larger catalogs ``skipped``), any
    other death ``error``. The parent never initialises a JAX backend (on a GPU it would hold
    memory, or a preallocated pool, while the workers measure)."""
    out = tmp_path / "study.json"
    code = f"""
from jax._src import xla_bridge
from srs_jax.config import run_config
from srs_jax.experiments import catalog
res = catalog.run_study(run_config("synthetic"), losses=["cce", "ce", "ce_neg"],
                        catalogs=[300, 20, 4000], shape={TINY!r}, steps=1, warmup=0,
                        out_path={str(out)!r}, worker_module="tests.experiments.fake_catalog_worker",
                        log=lambda m: None)
assert not xla_bridge._backends, xla_bridge._backends
"""
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=200)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Segmentation fault" in p.stderr  # worker logs pass through
    data = json.loads(out.read_text())
    got = {(q["loss"], q["n_items"]): q["status"] for q in data["points"]}
    assert got == {("cce", 20): "ok", ("cce", 300): "ok", ("cce", 4000): "ok",
                   ("ce", 20): "ok", ("ce", 300): "oom", ("ce", 4000): "skipped",
                   ("ce_neg", 20): "error", ("ce_neg", 300): "error", ("ce_neg", 4000): "error"}
    ce300 = [q for q in data["points"] if (q["loss"], q["n_items"]) == ("ce", 300)][0]
    assert ce300["error"].startswith("worker exited with code 6") and "RESOURCE_EXHAUSTED" in ce300["error"]
    assert (data["meta"]["device"], data["meta"]["compute_dtype"]) == ("fake-gpu", "bfloat16")
    assert data["meta"]["xla_env"]["XLA_PYTHON_CLIENT_PREALLOCATE"] in ("false", "False", "0")
    assert sorted(os.listdir(tmp_path)) == ["study.json"]
