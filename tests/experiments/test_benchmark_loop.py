"""Smoke test of ``python -m experiments.benchmark_loop`` on CPU: every rate it reports. (The
loop's NNX-state path, ``--noflat``, is checked against the flat one in tests/training.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_loop_reports_every_rate(tmp_path):
    out = tmp_path / "loop.json"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    args = ["--config", "configs/synthetic_cce.py", "--steps", "5", "--repeats", "1",
            "--out", str(out), f"--config.data.cache_dir={tmp_path / 'cache'}",
            "--config.data.synthetic.n_users=120", "--config.data.synthetic.n_items=60",
            "--config.model.hidden=16", "--config.model.max_len=8", "--config.train.batch_size=16"]
    run = subprocess.run([sys.executable, "-m", "experiments.benchmark_loop", *args], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    assert json.loads(run.stdout.strip().splitlines()[-1]) == result
    assert result["steps"] == 5 and result["flat"] is True
    for name in ("bare", "loop", "bare_nnx", "host"):
        assert result[f"{name}_steps_per_s"] > 0 and len(result[f"{name}_runs"]) == 1
    assert result["ratio"] == pytest.approx(result["loop_steps_per_s"] / result["bare_steps_per_s"])
