"""``python -m experiments.train --init_from OLD``: a refit on newer data of a growing synthetic
world starts from the older run's parameters (results.json records it); a model that does not
match stops with one ``error:`` line and leaves no run folder."""

from __future__ import annotations

import json
import os

import numpy as np

from tests.faults.harness import error_line, run, tiny_args
from srs_jax.data import dataset_config
from srs_jax.data.synthetic import generate

WORLD = {"n_users": 300, "n_items": 150, "growth": 1.0, "mean_gap_s": 3 * 3600.0}


def _world_args(cache_dir) -> list[str]:
    return tiny_args(str(cache_dir)) + [f"--config.data.synthetic.{k}={v}" for k, v in WORLD.items()]


def test_init_from_an_older_snapshot(tmp_path):
    synthetic = dataset_config("synthetic").synthetic
    synthetic.unlock()
    for key, value in WORLD.items():
        synthetic[key] = value
    _, _, times = generate(synthetic)
    until = float(np.quantile(times, 0.7))
    old, new, bad = tmp_path / "old", tmp_path / "new", tmp_path / "bad"

    p = run("experiments.train", *_world_args(tmp_path / "cache"), "--workdir", old,
            f"--config.data.time_until={until}")
    assert p.returncode == 0, p.stderr[-3000:]
    p = run("experiments.train", *_world_args(tmp_path / "cache"), "--workdir", new,
            "--init_from", old)
    assert p.returncode == 0, p.stderr[-3000:]
    results = json.load(open(new / "results.json"))
    old_results = json.load(open(old / "results.json"))
    warm = results["warm_start"]
    assert warm["init_from"] == str(old) and warm["checkpoint"] == "best"
    assert warm["items_kept"] > 0 and warm["items_new"] > 0
    assert warm["items_kept"] + warm["items_new"] == results["dataset"]["n_items"]
    assert warm["items_kept"] + warm["items_dropped"] == old_results["dataset"]["n_items"]
    assert "warm_start" not in old_results

    # Another hidden size: one line naming the parameter, nothing written.
    p = run("experiments.train", *_world_args(tmp_path / "cache"), "--workdir", bad,
            "--init_from", old, "--config.model.hidden=24")
    error_line(p, "--init_from", "shape")
    assert not bad.exists()
    # Refused together with --resume, and a folder that is no run, before JAX loads.
    error_line(run("experiments.train", *_world_args(tmp_path / "cache"), "--workdir", new,
                   "--init_from", old, "--resume"), "--init_from", "--resume", status=2)
    error_line(run("experiments.train", *_world_args(tmp_path / "cache"), "--workdir", bad,
                   "--init_from", tmp_path / "cache"), "not a run folder", status=2)
    assert not bad.exists()
