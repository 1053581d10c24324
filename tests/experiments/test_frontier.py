"""The CCE- frontier's points, its rows (best epoch, seconds to reach it) and its report command."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from srs_jax.config import load_specs
from srs_jax.experiments import frontier

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _config_file(path):
    spec = importlib.util.spec_from_file_location("frontier_config", os.path.join(ROOT, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


@pytest.mark.parametrize("set_key", list(frontier.SETS))
@pytest.mark.parametrize("setting", frontier.SETTINGS, ids=lambda s: s.name)
def test_point_config_is_the_config_file_with_the_command_flags(set_key, setting, monkeypatch):
    monkeypatch.setenv("DATA_DIR", "/data")
    argv = frontier.train_command(set_key, setting, "/tmp/x/runs/p", 100)
    assert argv[argv.index("--config") + 1] == frontier.SETS[set_key].config_file
    # The command's --config.<field>=<value> flags applied to its config file.
    from_file = _config_file(frontier.SETS[set_key].config_file)
    for flag in argv:
        if flag.startswith("--config.") and "max_train_seconds" not in flag:
            field, value = flag[len("--config."):].split("=")
            section, name = field.split(".")
            from_file[section][name] = type(from_file[section][name])(value)
    spec, expected = load_specs(frontier.point_config(set_key, setting)), load_specs(from_file)
    assert spec == expected
    assert spec.loss.type == setting.loss
    n = frontier.SETS[set_key].negatives
    assert spec.loss.num_negatives == ((n + 1) * setting.multiple - 1 if setting.multiple else 0)
    if setting.loss == "cce_neg":
        assert spec.loss.sharing == setting.sharing
        assert (spec.loss.num_negatives + 1) % (n + 1) == 0
    shown = frontier.shown_command(argv)
    assert shown.startswith("DATA_DIR=... python -m experiments.train" if "amazon" in set_key
                            else "python -m experiments.train")
    assert "--workdir runs/p" in shown


def _history(rng, epochs, steps_per_epoch):
    values = np.round(rng.random(epochs) * 0.1, 3)  # rounding makes ties likely
    return [{"epoch": i + 1, "global_step": (i + 1) * steps_per_epoch, "val": {"ndcg@10": float(v)}}
            for i, v in enumerate(values)]


def _runs(rng):
    points = []
    for key in frontier.SETS:
        for setting in frontier.SETTINGS:
            epochs = int(rng.integers(0, 12))
            finished = epochs > 0 and rng.random() < 0.8
            points.append({
                "name": frontier.point_name(key, setting), "set": key, "setting": setting.name,
                "num_negatives": frontier.num_negatives(frontier.SETS[key], setting),
                "command": "python -m experiments.train ...",
                "history": _history(rng, epochs, int(rng.integers(50, 400))),
                "results": ({"test": {"ndcg@10": float(rng.random()), "hitrate@10": 0.5},
                             "stopped": "early stopping"} if finished else None)})
    timing = {p["name"]: {"median_step_s": float(rng.uniform(1e-3, 0.5))}
              for p in points if rng.random() < 0.9}
    return {"environment": {}, "points": points}, {"environment": {}, "points": timing}


@pytest.mark.parametrize("seed", range(4))
def test_rows_take_the_first_best_epoch_and_its_steps(seed):
    rng = np.random.default_rng(seed)
    runs, timing = _runs(rng)
    rows = frontier.relative(frontier.rows_for(runs, timing["points"]))
    assert [(r["set"], r["setting"]) for r in rows] == [(k, s.name) for k in frontier.SETS
                                                        for s in frontier.SETTINGS]
    by_name = {p["name"]: p for p in runs["points"]}
    for r in rows:
        p = by_name[frontier.point_name(r["set"], frontier.setting_named(r["setting"]))]
        values = [h["val"]["ndcg@10"] for h in p["history"]]
        if not values:
            assert r["best_epoch"] is None and r["seconds_to_best"] is None
            assert r["stopped"] == "no epoch"
            continue
        best = int(np.argmax(values))  # the first of equal maxima
        assert r["best_epoch"] == best + 1 and r["val_ndcg@10"] == values[best]
        step = (timing["points"].get(p["name"]) or {}).get("median_step_s")
        if step is None:
            assert r["seconds_to_best"] is None and r["speedup"] is None
        else:
            assert r["seconds_to_best"] == pytest.approx(p["history"][best]["global_step"] * step)
        if p["results"] is None:
            assert r["stopped"] == "killed" and r["test_ndcg@10"] is None
        base = next(b for b in rows if b["set"] == r["set"] and b["setting"] == "row x1")
        target = base["val_ndcg@10"]
        reached = [h["global_step"] for h in p["history"]
                   if target is not None and h["val"]["ndcg@10"] >= target]
        if reached and step is not None:
            assert r["seconds_to_row_quality"] == pytest.approx(reached[0] * step)
            if r["setting"] == "row x1":
                assert r["seconds_to_row_quality"] == pytest.approx(r["seconds_to_best"])
                assert r["speedup"] == pytest.approx(1.0)
        else:
            assert r["seconds_to_row_quality"] is None and r["speedup"] is None
        if base["test_ndcg@10"] and r["test_ndcg@10"] is not None:
            assert r["vs_row"] == pytest.approx(r["test_ndcg@10"] / base["test_ndcg@10"])
        else:
            assert r["vs_row"] is None


def test_report_command_writes_table_plot_and_json(tmp_path):
    runs, timing = _runs(np.random.default_rng(7))
    (tmp_path / "frontier_runs.json").write_text(json.dumps(runs))
    (tmp_path / "frontier_timing.json").write_text(json.dumps(timing))
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-m", "experiments.cce_neg_frontier", "--stage",
                          "report", "--out", str(tmp_path)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    table = (tmp_path / "frontier.md").read_text()
    assert table.count("\n") == 2 + len(frontier.SETS) * len(frontier.SETTINGS)
    assert (tmp_path / "frontier.png").read_bytes().startswith(PNG_MAGIC)
    rows = json.loads((tmp_path / "frontier.json").read_text())["rows"]
    assert len(rows) == len(frontier.SETS) * len(frontier.SETTINGS)


def test_command_faults_are_one_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("DATA_DIR", None)
    for args, words in ((["--stage", "runs", "--out", str(tmp_path)], "DATA_DIR"),
                        (["--stage", "report", "--out", str(tmp_path / "none")], "not found"),
                        (["--out", str(tmp_path)], "--stage"),
                        (["--stage", "timing", "--out", str(tmp_path), "--sets=netflix"], "netflix")):
        out = subprocess.run([sys.executable, "-m", "experiments.cce_neg_frontier", *args],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode != 0
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], out.stderr
