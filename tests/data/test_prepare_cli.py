"""``python -m experiments.prepare``: summary, final JSON line, overrides and errors."""

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

ROOT = Path(__file__).resolve().parents[2]
# The hand example of test_splits.py (counts derived there).
HAND_ROWS = [("a", "x", 1), ("a", "y", 2), ("b", "x", 3), ("c", "y", 4), ("b", "z", 5),
             ("c", "x", 6), ("d", "y", 7), ("d", "x", 8), ("a", "z", 9), ("b", "w", 9),
             ("e", "x", 10), ("a", "x", 11)]

CONFIG = """
import ml_collections
from srs_jax.data import dataset_config


def get_config():
    config = ml_collections.ConfigDict()
    config.data = dataset_config({name!r})
    config.data.cache_dir = {cache!r}
    config.data.path = {path!r}
    config.data.min_item_count = 1
    config.data.min_user_count = 1
    config.data.time_quantile = 0.75
    config.data.val_user_fraction = 0.25
    config.data.seed = 4
    return config
"""


def _run(tmp_path, *args):
    # cwd=ROOT puts the repository on the module path; the caller's environment (PYTHONPATH
    # included, e.g. packages installed with pip --target) is inherited, as in the other CLI tests.
    return subprocess.run([sys.executable, "-m", "experiments.prepare", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def config_file(tmp_path):
    csv = tmp_path / "hand.csv"
    pl.DataFrame({"user_id": [r[0] for r in HAND_ROWS], "item_id": [r[1] for r in HAND_ROWS],
                  "timestamp": [r[2] for r in HAND_ROWS]}).write_csv(csv)
    path = tmp_path / "hand_config.py"
    path.write_text(CONFIG.format(name="generic", cache=str(tmp_path / "cache"), path=str(csv)))
    return path


def test_prints_summary_and_json(tmp_path, config_file):
    out = _run(tmp_path, f"--config={config_file}")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("dataset generic  split global_temporal")
    # The hand example of test_splits.py, counted by hand there.
    assert json.loads(lines[-1]) == dict(n_users=5, n_items=4, n_interactions=12,
                                         n_train_users=3, n_val_users=1, n_test_users=1)
    assert list((tmp_path / "cache").iterdir())  # cached
    loo = _run(tmp_path, f"--config={config_file}", "--config.data.split=leave_one_out")
    assert loo.returncode == 0, loo.stderr
    assert json.loads(loo.stdout.strip().splitlines()[-1]) == dict(
        n_users=5, n_items=4, n_interactions=12, n_train_users=5, n_val_users=2, n_test_users=2)


def test_misspelled_override_fails_at_start(tmp_path, config_file):
    out = _run(tmp_path, f"--config={config_file}", "--config.data.min_item_cnt=2")
    assert out.returncode != 0
    assert "min_item_cnt" in out.stderr and "min_item_count" in out.stderr
    assert not (tmp_path / "cache").exists()
    out = _run(tmp_path, f"--config={config_file}", "--config.data.min_item_count=two")
    assert out.returncode != 0 and "min_item_count" in out.stderr


def test_bad_input_is_one_line(tmp_path, config_file):
    out = _run(tmp_path, f"--config={config_file}", "--config.data.path=/no/such/file.csv")
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith(
        "error: generic: raw file /no/such/file.csv not found")


def test_config_without_data_field(tmp_path):
    bad = tmp_path / "bad_config.py"
    bad.write_text("import ml_collections\n\n\ndef get_config():\n"
                   "    return ml_collections.ConfigDict({'model': {'name': 'sasrec'}})\n")
    out = _run(tmp_path, f"--config={bad}")
    assert out.returncode != 0 and "has a .data field" in out.stderr
    out = _run(tmp_path)
    assert out.returncode != 0 and "--config" in out.stderr
