"""The commands end to end on a tiny synthetic config: train, evaluate, recommend from the saved run."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(module, *args):
    out = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    workdir = tmp / "run"
    _run("experiments.train",  # no --config: the synthetic default, shrunk to seconds
         f"--workdir={workdir}", f"--config.data.cache_dir={tmp / 'cache'}",
         "--config.data.synthetic.n_users=300", "--config.data.synthetic.n_items=200",
         "--config.data.synthetic.mean_length=12", "--config.data.split=leave_one_out",
         "--config.model.hidden=16", "--config.model.max_len=12", "--config.train.batch_size=64",
         "--config.train.lr=0.01", "--config.train.max_epochs=3", "--config.train.eval_batch_size=100",
         "--config.eval.ks=1,10,20")
    return workdir


def test_train_command_writes_a_complete_run(trained):
    with open(trained / "results.json") as f:
        results = json.load(f)
    for split in ("val", "test"):
        assert {"ndcg@10", "hitrate@10", "mrr@10", "recall@10", "precision@10", "map@10"} <= set(results[split])
    assert {"coverage@10", "surprisal@10", "coverage@20"} <= set(results["test"])
    assert set(results["popularity"]["test"]) == set(results["test"])
    for key in ("peak_memory_bytes", "peak_memory_train_bytes", "epoch_time_s", "epoch_train_time_s",
                "steps_per_s", "tokens_per_s", "compile_s", "best_epoch", "epochs_run"):
        assert key in results
    assert results["epochs_run"] == 3 and 1 <= results["best_epoch"] <= 3
    with open(trained / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    assert len(rows) == 3 and all("peak_memory_bytes" in r and "ndcg@10" in r["val"] for r in rows)
    with open(trained / "config.json") as f:
        config = json.load(f)
    assert config["model"]["hidden"] == 16 and config["loss"]["type"] == "cce"


def test_evaluate_command_reproduces_the_final_metrics(trained):
    out = _run("experiments.evaluate", f"--workdir={trained}")
    printed = json.loads(out.stdout)
    with open(trained / "eval_best.json") as f:
        saved = json.load(f)
    with open(trained / "results.json") as f:
        results = json.load(f)
    assert printed == saved
    for split in ("val", "test"):
        for key, value in results[split].items():
            assert saved[split][key] == pytest.approx(value, abs=1e-6), (split, key)


def test_evaluate_command_needs_a_run(tmp_path):
    out = subprocess.run([sys.executable, "-m", "experiments.evaluate", f"--workdir={tmp_path}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "config.json" in lines[0]


def test_recommend_from_saved_run(trained):
    from srs_jax import inference
    from srs_jax.training.saved_run import load_run

    run = load_run(str(trained))
    ds = run.dataset
    raw_items = np.asarray(ds.item_raw_ids)
    users = np.asarray(ds.user_raw_ids)[np.asarray(ds.test.users)[:7]]
    top = inference.recommend(str(trained), users=list(users), k=5, run=run)
    assert top.shape == (7, 5)
    for row, u in zip(top, np.asarray(ds.test.users)[:7]):
        # Known users are scored after their whole history (test input + test target): none of it comes back.
        j = int(np.flatnonzero(np.asarray(ds.test.users) == u)[0])
        seen = set(raw_items[ds.test.inputs.items[ds.test.inputs.offsets[j]:ds.test.inputs.offsets[j + 1]]].tolist())
        seen.add(raw_items[ds.test.targets[j]].item())
        assert len(set(row.tolist())) == 5 and not (set(row.tolist()) & seen)
        assert set(row.tolist()) <= set(raw_items[1:].tolist())
    # Histories of raw ids: the same user history gives the same list.
    j = 0
    hist = list(raw_items[ds.test.inputs.items[ds.test.inputs.offsets[j]:ds.test.inputs.offsets[j + 1]]])
    hist.append(raw_items[ds.test.targets[j]])
    np.testing.assert_array_equal(inference.recommend(str(trained), histories=[hist], k=5, run=run)[0], top[0])
    with pytest.raises(ValueError, match="unknown user"):
        inference.recommend(str(trained), users=["no-such-user"], k=5, run=run)
    with pytest.raises(ValueError, match="unknown item"):
        inference.recommend(str(trained), histories=[["no-such-item"]], k=5, run=run)
    with pytest.raises(ValueError, match="exactly one"):
        inference.recommend(str(trained), k=5, run=run)
