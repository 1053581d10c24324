"""``--resume`` faults: a config that changes what the checkpoint means, corrupted run files and
checkpoints. Each stops before anything is written (the run folder stays byte for byte intact)."""

from __future__ import annotations

import json
import os

import pytest

from tests.faults import harness
from tests.faults.harness import assert_intact, error_line, run, snapshot


def _resume(good_run, tiny, *overrides):
    return run("experiments.train", *tiny, "--workdir", good_run, "--resume", *overrides)


@pytest.mark.parametrize("override,field", [
    ("--config.model.hidden=32", "model.hidden 16 -> 32"),
    ("--config.data.synthetic.n_items=90", "data.synthetic.n_items 120 -> 90"),
    ("--config.loss.type=ce", 'loss.type "cce" -> "ce"'),
    ("--config.train.lr=0.01", "train.lr 0.001 -> 0.01"),
    ("--config.train.batch_size=64", "train.batch_size 128 -> 64"),
    ("--config.seed=7", "seed 42 -> 7"),
    ("--config.eval.monitor=hitrate@10", "eval.monitor"),
    ("--config.model.max_len=16", "model.max_len 32 -> 16"),
    ("--config.data.min_item_count=2", "data.min_item_count"),
])
def test_resume_with_a_config_that_changes_the_checkpoint(good_run, tiny, override, field):
    before = snapshot(good_run)
    line = error_line(_resume(good_run, tiny, override), "changes what its checkpoint means",
                      field, "nothing was written")
    assert good_run in line
    assert_intact(good_run, before)


def test_evaluate_still_works_after_a_refused_resume(good_run, tiny):
    error_line(_resume(good_run, tiny, "--config.model.hidden=32"))
    assert json.load(open(os.path.join(good_run, "config.json")))["model"]["hidden"] == 16


@pytest.mark.parametrize("content,needle", [("", "is empty"), ('{"model": ', "not valid JSON"),
                                            ("\x00\x01binary", "not valid JSON"), ("[1, 2]", "config object")])
def test_resume_with_corrupt_config_json(good_run, tiny, content, needle):
    path = os.path.join(good_run, "config.json")
    with open(path, "w") as f:
        f.write(content)
    before = snapshot(good_run)
    error_line(_resume(good_run, tiny), "config.json", needle)
    assert_intact(good_run, before)


def _damage(path, how):
    data = open(path, "rb").read()
    if how == "truncate":
        data = data[: len(data) // 2]
    elif how == "empty":
        data = b""
    elif how == "flip":
        data = data[:-1] + bytes([data[-1] ^ 0xFF])
    with open(path, "wb") as f:
        f.write(data)


@pytest.mark.parametrize("how,needle", [("truncate", "truncated"), ("flip", "checksum mismatch"),
                                        ("empty", "truncated")])
def test_resume_with_a_damaged_checkpoint_file(good_run, tiny, how, needle):
    target = harness.checkpoint_files(good_run)[0]
    _damage(target, how)
    before = snapshot(good_run)
    error_line(_resume(good_run, tiny), os.path.basename(target), needle, "another --workdir")
    assert_intact(good_run, before)


def test_resume_with_empty_checkpoint_metadata(good_run, tiny):
    target = [p for p in harness.checkpoint_files(good_run) if p.endswith("_CHECKPOINT_METADATA")][0]
    _damage(target, "empty")
    before = snapshot(good_run)
    error_line(_resume(good_run, tiny), "_CHECKPOINT_METADATA", "truncated")
    assert_intact(good_run, before)


def test_resume_with_a_missing_checkpoint_file(good_run, tiny):
    target = harness.checkpoint_files(good_run)[0]
    os.remove(target)
    before = snapshot(good_run)
    error_line(_resume(good_run, tiny), os.path.basename(target), "missing")
    assert_intact(good_run, before)


def test_resume_with_corrupt_checksums(good_run, tiny):
    latest = os.path.dirname(harness.checkpoint_files(good_run)[-1])
    while os.path.basename(os.path.dirname(latest)) != "latest":
        latest = os.path.dirname(latest)
    with open(os.path.join(latest, "checksums.json"), "w") as f:
        f.write("{")
    before = snapshot(good_run)
    error_line(_resume(good_run, tiny), "checksums.json")
    assert_intact(good_run, before)


def test_resume_with_a_damaged_best_checkpoint(good_run, tiny):
    _damage(harness.checkpoint_files(good_run, "best")[0], "flip")
    before = snapshot(good_run)
    error_line(_resume(good_run, tiny), "best checkpoint", "checksum mismatch")
    assert_intact(good_run, before)


def test_resume_with_a_corrupt_resume_log(good_run, tiny):
    with open(os.path.join(good_run, "resumes.jsonl"), "w") as f:
        f.write("{not json\n")
    before = snapshot(good_run)
    error_line(_resume(good_run, tiny, "--config.train.max_epochs=2"), "resumes.jsonl", "line 1")
    assert_intact(good_run, before)


def test_resume_with_allowed_changes_is_recorded(good_run, tiny):
    p = _resume(good_run, tiny, "--config.train.max_epochs=2",
                "--config.eval.popularity_baseline=False")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Traceback" not in p.stderr
    assert "train.max_epochs 1 -> 2" in p.stderr
    rows = [json.loads(x) for x in open(os.path.join(good_run, "resumes.jsonl"))]
    assert len(rows) == 1 and rows[0]["changed"]["train.max_epochs"] == [1, 2]
    assert rows[0]["changed"]["eval.popularity_baseline"] == [True, False]
    assert rows[0]["from_step"] == 2
    results = json.load(open(os.path.join(good_run, "results.json")))
    assert results["resumes"] == rows and results["epochs_run"] == 2
    metrics = [json.loads(x) for x in open(os.path.join(good_run, "metrics.jsonl"))]
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert json.load(open(os.path.join(good_run, "config.json")))["train"]["max_epochs"] == 2


def test_resume_config_comparison_in_process():
    from srs_jax.training import workdir as workdir_lib

    saved = {"model": {"hidden": 16, "compute_dtype": "float32"}, "train": {"max_epochs": 1},
             "eval": {"ks": [1, 10]}, "data": {"time_until": None}, "workdir": "/a"}
    new = {"model": {"hidden": 16, "compute_dtype": "auto"}, "train": {"max_epochs": 3},
           "eval": {"ks": [1, 10]}, "workdir": "/b", "loss": {"extra": None}}
    frozen, allowed = workdir_lib.config_changes(saved, new)
    assert frozen == {} and allowed == {"train.max_epochs": (1, 3), "workdir": ("/a", "/b")}
    frozen, _ = workdir_lib.config_changes(saved, dict(new, model={"hidden": 8}))
    assert list(frozen) == ["model.compute_dtype", "model.hidden"] or "model.hidden" in frozen
    _, allowed = workdir_lib.config_changes({"x": {"flag": True}}, {"x": {"flag": 1}})
    frozen, _ = workdir_lib.config_changes({"x": {"flag": True}}, {"x": {"flag": 1}})
    assert "x.flag" in frozen  # a bool is not an int


def test_resume_compares_spec_dicts():
    """``config.json`` (``RunSpec.to_dict()``, compute dtype resolved) against the same config
    given again (a ConfigDict, 'auto'): no change; a frozen field differs by name."""
    from srs_jax.config import load_specs, run_config
    from srs_jax.training import workdir as workdir_lib

    c = run_config()
    c.data.synthetic.n_items = 77
    saved = json.loads(json.dumps(load_specs(c).to_dict()))
    assert workdir_lib.config_changes(workdir_lib.config_as_dict(saved),
                                      workdir_lib.config_as_dict(c)) == ({}, {})
    c.model.hidden = 24
    c.train.max_epochs = 9
    frozen, allowed = workdir_lib.config_changes(workdir_lib.config_as_dict(saved),
                                                 workdir_lib.config_as_dict(c))
    assert set(frozen) == {"model.hidden"} and set(allowed) == {"train.max_epochs"}
