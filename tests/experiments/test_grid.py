"""Grid search: point order, resume skip, OOM recorded and the search goes on, CSV integrity."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from srs_jax.experiments import errors, grid as grid_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAKE = "tests.experiments.fake_train:train"


def base_config(loss="cce_neg", seed=42):
    from configs import base

    c = base.get_config("synthetic")
    c.loss.type = loss
    c.loss.num_negatives = 7
    c.seed = seed
    return c


def small_grid(bs, sl, nn, launches=1):
    return ml_collections.ConfigDict(dict(batch_size=tuple(bs), max_len=tuple(sl),
                                          num_negatives=tuple(nn), launches=launches))


def read_log(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [tuple(int(x) for x in line.split(",")) for line in f if line.strip()]


def test_reference_defaults_and_loop_order():
    g = grid_lib.default_grid()
    pts = grid_lib.grid_points(g, base_config("ce_neg"))
    assert len(pts) == 7 * 6 * 8  # the reference grid: 336 runs per dataset
    assert pts[0] == (16, 32, 32, 42) and pts[1] == (16, 32, 64, 42) and pts[-1] == (1024, 1024, 2048, 42)
    # batch size is the outer loop, negatives the inner one
    assert [p.batch_size for p in pts] == sorted(p.batch_size for p in pts)
    # losses without negatives collapse the NN axis; launches give seeds seed, seed + 1, ...
    rng = np.random.default_rng(0)
    bs = rng.choice([8, 16, 32, 64], size=3, replace=False).tolist()
    pts = grid_lib.grid_points(small_grid(bs, [5, 9], [3, 4, 5], launches=2), base_config("cce", seed=7))
    assert len(pts) == 3 * 2 * 1 * 2
    assert {p.num_negatives for p in pts} == {0} and {p.seed for p in pts} == {7, 8}
    c = grid_lib.point_config(base_config("cce_neg"), grid_lib.GridPoint(64, 9, 31, 3))
    assert (c.train.batch_size, c.model.max_len, c.loss.num_negatives, c.seed) == (64, 9, 31, 3)


@pytest.mark.parametrize("bad", [(), (0, 16), ("x",)])
def test_bad_grid_is_one_line_error(bad):
    with pytest.raises(ValueError, match="grid.batch_size"):
        grid_lib.grid_points(small_grid(bad, [8], [3]), base_config())


def test_oom_classification():
    import jax

    assert errors.is_out_of_memory(MemoryError())
    assert errors.is_out_of_memory(jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory"))
    assert not errors.is_out_of_memory(jax.errors.JaxRuntimeError("INTERNAL: something else"))
    assert not errors.is_out_of_memory(ValueError("RESOURCE_EXHAUSTED in a message"))
    assert "\n" not in errors.short_message(RuntimeError("a\nb" * 500))


def test_in_process_resume_oom_and_csv(tmp_path, monkeypatch):
    log = tmp_path / "calls.log"
    monkeypatch.setenv("FAKE_TRAIN_LOG", str(log))
    out = str(tmp_path / "grid")
    cfg = base_config("cce_neg")
    # 999 -> MemoryError, 777 -> RESOURCE_EXHAUSTED, 666 -> a bug: all recorded, search continues
    g = small_grid([32, 999], [16, 777, 666], [3, 5])
    s = grid_lib.run_grid(cfg, g, out, train_fn=FAKE, isolate=False, log=lambda m: None)
    n = 2 * 3 * 2
    assert len(s.ran) == n and not s.skipped
    assert s.statuses == {"ok": 2, "oom": 8, "error": 2}
    rows = grid_lib.read_rows(s.csv_path)
    assert len(rows) == n and len({grid_lib.row_key(r) for r in rows}) == n
    by_key = {grid_lib.row_key(r): r for r in rows}
    ok = by_key[(32, 16, 3, 42)]
    assert ok["status"] == "ok" and ok["error"] == ""
    res = grid_lib._load_results(os.path.join(out, "runs", "bs32_sl16_nn3_seed42"))
    assert float(ok["test_ndcg@10"]) == pytest.approx(res["test"]["ndcg@10"], rel=1e-12)
    assert float(ok["peak_memory_gb"]) == pytest.approx(res["peak_memory_bytes"] / 2**30)
    assert float(ok["step_time_s"]) == pytest.approx(1 / res["steps_per_s"])
    assert by_key[(999, 16, 3, 42)]["status"] == "oom"
    assert "MemoryError" in by_key[(999, 16, 3, 42)]["error"]
    assert "RESOURCE_EXHAUSTED" in by_key[(32, 777, 5, 42)]["error"]
    assert by_key[(32, 666, 3, 42)]["status"] == "error"
    assert by_key[(32, 666, 3, 42)]["peak_memory_gb"] == ""
    assert len(read_log(log)) == n

    # Same command again: ok and oom points are final and skipped; the 2 errors are retried.
    s2 = grid_lib.run_grid(cfg, g, out, train_fn=FAKE, isolate=False, log=lambda m: None)
    assert sorted(s2.ran) == [(32, 666, 3, 42), (32, 666, 5, 42)] and len(s2.skipped) == n - 2
    assert len(read_log(log)) == n + 2
    # A larger grid trains only the new points (and the errors); --retry_failed also reruns OOMs.
    g3 = small_grid([32, 999], [16, 777, 666, 24], [3, 5])
    s3 = grid_lib.run_grid(cfg, g3, out, train_fn=FAKE, isolate=False, log=lambda m: None)
    assert sorted(s3.ran) == sorted([(32, 24, 3, 42), (32, 24, 5, 42), (999, 24, 3, 42), (999, 24, 5, 42),
                                     (32, 666, 3, 42), (32, 666, 5, 42)])
    s4 = grid_lib.run_grid(cfg, g3, out, train_fn=FAKE, isolate=False, retry_failed=True,
                           log=lambda m: None)
    assert len(s4.ran) == 16 - 4 and all(p.batch_size == 999 or p.max_len in (777, 666) for p in s4.ran)
    with pytest.raises(ValueError, match="has no function"):
        grid_lib.run_grid(cfg, g3, out, train_fn="tests.experiments.fake_train:nope", log=print)
    rows = grid_lib.read_rows(s.csv_path)
    assert len(rows) == 16 and len({grid_lib.row_key(r) for r in rows}) == 16  # replaced, not duplicated


def test_finished_run_without_row_is_recorded_not_retrained(tmp_path, monkeypatch):
    """A crash after results.json but before the CSV row: the row is rebuilt from the run."""
    log = tmp_path / "calls.log"
    monkeypatch.setenv("FAKE_TRAIN_LOG", str(log))
    from tests.experiments import fake_train

    cfg = base_config("cce")
    point = grid_lib.GridPoint(16, 8, 0, 42)
    fake_train.train(grid_lib.point_config(cfg, point), str(tmp_path / "g" / "runs" / point.name))
    assert len(read_log(log)) == 1
    s = grid_lib.run_grid(cfg, small_grid([16], [8], [3]), str(tmp_path / "g"), train_fn=FAKE,
                          isolate=False, log=lambda m: None)
    assert s.statuses == {"ok": 1} and len(read_log(log)) == 1


def test_csv_is_whole_after_every_write(tmp_path):
    """Every append rewrites the file atomically: it always parses, header first, no temp files."""
    path = str(tmp_path / "g.csv")
    cfg = base_config("cce_neg")
    rng = np.random.default_rng(3)
    from tests.experiments import fake_runs

    for i in range(25):
        point = grid_lib.GridPoint(int(rng.integers(1, 5)), int(rng.integers(1, 5)), 3, 42)
        status = str(rng.choice(["ok", "oom"]))
        res = fake_runs.fake_results(rng) if status == "ok" else None
        grid_lib.append_row(path, grid_lib.result_row(point, cfg, status=status, results=res,
                                                      error="" if res else "MemoryError: x,\n\"y\""))
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        keys = [grid_lib.row_key(r) for r in rows]
        assert len(keys) == len(set(keys))
        assert all(r["status"] in grid_lib.STATUSES for r in rows)
    assert sorted(os.listdir(tmp_path)) == ["g.csv"]
    with open(path) as f:
        assert f.read().endswith("\n")
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a grid CSV"):
        grid_lib.read_rows(str(tmp_path / "other.csv"))


def test_cli_isolated_points(tmp_path):
    """The command: each point in its own process; OOM in a child is recorded; rerun skips."""
    out = tmp_path / "g"
    env = dict(os.environ, FAKE_TRAIN_LOG=str(tmp_path / "calls.log"), JAX_PLATFORMS="cpu")
    cmd = [sys.executable, "-m", "experiments.grid_search", "--config", "configs/base.py",
           "--config.loss.type=ce_neg", "--config.loss.num_negatives=3", f"--out={out}",
           "--grid.batch_size=32,999", "--grid.max_len=16,555", "--grid.num_negatives=3",
           f"--train_fn={FAKE}"]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = grid_lib.read_rows(str(out / "grid.csv"))
    assert {grid_lib.row_key(r): r["status"] for r in rows} == {
        (32, 16, 3, 42): "ok", (999, 16, 3, 42): "oom", (32, 555, 3, 42): "error",
        (999, 555, 3, 42): "oom"}
    crash = [r for r in rows if grid_lib.row_key(r) == (32, 555, 3, 42)][0]
    assert crash["error"] == "worker exited with code 9: fatal: the process is going away"
    assert all(r["peak_memory_scope"] in ("run", "") for r in rows)
    assert "fatal: the process is going away" in p.stderr  # the child's log is streamed
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=200)
    assert p.returncode == 0 and "1 points run {'error': 1}, 3 already" in p.stdout  # the crash only
    assert len(read_log(tmp_path / "calls.log")) == 5
    bad = subprocess.run(cmd[:-1] + ["--grid.batch_size=0"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=200)
    assert bad.returncode != 0 and "grid.batch_size" in bad.stderr.strip().splitlines()[-1]


def test_real_trainer_point_and_report(tmp_path):
    """One tiny point through the real trainer (srs_jax.training.loop.train), then the report."""
    from srs_jax.experiments import reporting

    cfg = base_config("cce")
    cfg.data.synthetic.n_users, cfg.data.synthetic.n_items = 300, 150
    cfg.data.cache_dir = str(tmp_path / "cache")
    cfg.model.hidden, cfg.model.num_blocks = 16, 1
    cfg.train.max_epochs, cfg.eval.ks = 1, (1, 10)
    s = grid_lib.run_grid(cfg, small_grid([64], [12], [3]), str(tmp_path / "g"), isolate=False,
                          train_fn="srs_jax.training.loop:train", log=lambda m: None)
    assert s.statuses == {"ok": 1}, grid_lib.read_rows(s.csv_path)[0]["error"]
    [row] = grid_lib.read_rows(s.csv_path)
    res = grid_lib._load_results(os.path.join(str(tmp_path / "g"), "runs", "bs64_sl12_nn0_seed42"))
    assert float(row["test_ndcg@10"]) == pytest.approx(res["test"]["ndcg@10"])
    assert 0.0 <= float(row["test_coverage@10"]) <= 1.0
    assert row["peak_memory_gb"] == "" and res["peak_memory_bytes"] is None  # CPU: none, not 0
    assert row["peak_memory_scope"].startswith("process")
    from_csv = reporting.collect([s.csv_path]).run_rows
    from_dir = reporting.collect([str(tmp_path / "g")]).run_rows  # finds runs/<point>/
    assert len(from_csv) == len(from_dir) == 1
    for key in ("ndcg@10", "coverage@10", "surprisal@10", "epoch_s", "step_ms", "batch_size", "max_len"):
        assert from_csv[0][key] == pytest.approx(from_dir[0][key]), key
    both = reporting.collect([s.csv_path, str(tmp_path / "g")]).run_rows
    assert len(both) == 1 and both[0]["workdir"] == from_dir[0]["source"]  # one row per point


def test_isolated_parent_holds_no_device(tmp_path):
    """With isolate=True the parent never initialises a JAX backend: on a GPU it would otherwise
    hold memory (or a preallocated pool) while each point trains in its child."""
    code = f"""
from jax._src import xla_bridge
import ml_collections
from configs import base
from srs_jax.experiments import grid
c = base.get_config("synthetic")
g = ml_collections.ConfigDict(dict(batch_size=(8,), max_len=(4,), num_negatives=(1,), launches=1))
s = grid.run_grid(c, g, {str(tmp_path)!r}, train_fn={FAKE!r}, isolate=True, log=lambda m: None)
assert s.statuses == {{"ok": 1}}, s
assert not xla_bridge._backends, xla_bridge._backends
"""
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=200, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert p.returncode == 0, p.stderr[-3000:]
