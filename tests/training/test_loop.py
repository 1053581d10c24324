"""The training loop: bit-exact resume, NaN stop, failed checkpoint writes, early stopping, files."""

import json
import os
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from srs_jax import data as data_lib
from srs_jax.config import load_specs
from srs_jax.data import batches as batches_lib
from srs_jax.losses import build_loss
from srs_jax.training import checkpoints, loop, steps
from srs_jax.training.checkpoints import CheckpointWriteError
from srs_jax.training.state import build_state
from training.tiny import tiny_config


def _latest(workdir):
    """(params leaves as numpy, meta) of the latest checkpoint, restored without a template."""
    mgr = ocp.CheckpointManager(os.path.join(workdir, "checkpoints", "latest"),
                                item_names=("state", "meta"))
    step = mgr.latest_step()
    out = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(),
                                                     meta=ocp.args.JsonRestore()))
    mgr.close()
    return [np.asarray(x) for x in jax.tree.leaves(out.state)], dict(out.meta)


def _jsonl(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory):
    """A finished 1-epoch run; tests copy it before continuing it."""
    tmp = tmp_path_factory.mktemp("one")
    loop.train(tiny_config(tmp, max_epochs=1), str(tmp / "run"))
    return tmp / "run"


def _copy(run, tmp_path):
    shutil.copytree(run, tmp_path / "run")
    return str(tmp_path / "run")


@pytest.fixture(scope="module")
def two_epoch_run(tmp_path_factory):
    """Uninterrupted 2-epoch run, shared by the tests below."""
    tmp = tmp_path_factory.mktemp("full")
    results = loop.train(tiny_config(tmp), str(tmp / "run"))
    return tmp / "run", results


def test_resume_is_bit_exact(two_epoch_run, one_epoch_run, tmp_path):
    full_dir, full_results = two_epoch_run
    half = tmp_path / "run"
    shutil.copytree(one_epoch_run, half)
    loop.train(tiny_config(tmp_path, max_epochs=2), str(half), resume=True)
    a, meta_a = _latest(str(full_dir))
    b, meta_b = _latest(str(half))
    assert meta_a["epoch"] == meta_b["epoch"] == 2
    assert meta_a["global_step"] == meta_b["global_step"]
    assert len(a) == len(b) and len(a) > 10  # params + Adam moments + counts
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    rows_a, rows_b = _jsonl(str(full_dir)), _jsonl(str(half))
    assert [r["train_loss"] for r in rows_a] == [r["train_loss"] for r in rows_b]
    assert [r["val"] for r in rows_a] == [r["val"] for r in rows_b]
    with open(half / "results.json") as f:
        assert json.load(f)["test"] == full_results["test"]


def test_run_directory_contents(two_epoch_run):
    workdir, results = two_epoch_run
    for name in ("config.json", "metrics.jsonl", "results.json", "checkpoints/latest", "checkpoints/best"):
        assert (workdir / name).exists(), name
    assert any(f.startswith("events") for f in os.listdir(workdir / "tensorboard"))
    assert not [f for f in os.listdir(workdir) if f.endswith(".tmp")]
    rows = _jsonl(str(workdir))
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(np.isfinite(r["train_loss"]) and r["epoch_seconds"] >= r["train_seconds"] > 0 for r in rows)
    for split in ("val", "test"):
        for key in ("ndcg@10", "hitrate@10", "mrr@10", "recall@1"):
            assert 0.0 <= results[split][key] <= 1.0
    for key in ("coverage@10", "surprisal@10"):
        assert 0.0 <= results["test"][key] <= 1.0 and key in results["popularity"]["test"]
    best = max(r["val"]["ndcg@10"] for r in rows)
    assert results["val"]["ndcg@10"] == pytest.approx(best)  # final val = best checkpoint
    assert results["epoch_time_s"] > 0 and results["steps_per_s"] > 0 and results["tokens_per_s"] > 0
    assert results["train_steps"] == rows[-1]["global_step"] - 1  # the compile step is not timed
    # CPU: no memory statistics -> null with a note, never 0.
    if jax.default_backend() == "cpu":
        assert results["peak_memory_bytes"] is None and results["peak_memory_train_bytes"] is None
        assert "memory" in results["memory_note"]
    with open(workdir / "config.json") as f:
        cfg = json.load(f)
    assert cfg["model"]["compute_dtype"] in ("float32", "bfloat16")  # 'auto' resolved


def test_existing_run_needs_resume(two_epoch_run):
    workdir, _ = two_epoch_run
    with pytest.raises(ValueError, match="--resume"):
        loop.train(tiny_config(workdir.parent), str(workdir))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(one_epoch_run, tmp_path):
    workdir = _copy(one_epoch_run, tmp_path)
    before, meta_before = _latest(workdir)
    bad = tiny_config(tmp_path, max_epochs=2, lr=float("inf"))  # diverges: params become inf/nan
    with pytest.raises(loop.NonFiniteLossError, match="non-finite.*epoch 2.*epoch 1"):
        loop.train(bad, workdir, resume=True)
    after, meta_after = _latest(workdir)
    assert meta_after["epoch"] == meta_before["epoch"] == 1
    for x, y in zip(before, after):
        np.testing.assert_array_equal(x, y)
    assert len(_jsonl(workdir)) == 1


def test_failed_checkpoint_write_keeps_previous(one_epoch_run, tmp_path, monkeypatch):
    workdir = _copy(one_epoch_run, tmp_path)
    before, _ = _latest(workdir)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ocp.CheckpointManager, "save", full_disk)
    with pytest.raises(CheckpointWriteError, match="previous checkpoint is still valid") as err:
        loop.train(tiny_config(tmp_path, max_epochs=2), workdir, resume=True)
    assert "\n" not in str(err.value) and "No space left" in str(err.value)
    monkeypatch.undo()
    after, meta = _latest(workdir)
    assert meta["epoch"] == 1
    for x, y in zip(before, after):
        np.testing.assert_array_equal(x, y)
    # The run can then be resumed normally.
    results = loop.train(tiny_config(tmp_path, max_epochs=2), workdir, resume=True)
    assert results["epochs_run"] == 2


def test_early_stopping_after_patience(tmp_path):
    # lr so small that float32 parameters never change: validation never strictly improves.
    cfg = tiny_config(tmp_path, max_epochs=6, patience=2, lr=1e-30)
    results = loop.train(cfg, str(tmp_path / "run"))
    assert results["epochs_run"] == 3 and results["best_epoch"] == 1
    assert results["stopped"].startswith("early stopping")


def test_checkpoint_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    tree = {"params": {"w": rng.normal(size=(3, 5)).astype(np.float32)},
            "opt_state": (np.array(7, np.int32), {"m": rng.normal(size=(4,)).astype(np.float32)})}
    ck = checkpoints.RunCheckpoints(str(tmp_path))
    ck.save_latest(3, tree, {"epoch": 1})
    ck.save_best(3, tree, {"epoch": 1})
    tree2 = jax.tree.map(lambda x: x + 1, tree)
    ck.save_latest(6, tree2, {"epoch": 2})
    restored, meta = ck.restore_latest(tree)
    assert meta == {"epoch": 2} and ck.latest_step() == 6 and ck.best_step() == 3
    for x, y in zip(jax.tree.leaves(restored), jax.tree.leaves(tree2)):
        np.testing.assert_array_equal(np.asarray(x), y)
    best, _ = ck.restore_best(tree)
    for x, y in zip(jax.tree.leaves(best), jax.tree.leaves(tree)):
        np.testing.assert_array_equal(np.asarray(x), y)
    ck.close()
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        checkpoints.RunCheckpoints(str(tmp_path / "empty")).restore_best(tree)


def test_time_budget_stops_after_the_current_epoch(tmp_path):
    cfg = tiny_config(tmp_path, max_epochs=5, max_train_seconds=1e-6)
    results = loop.train(cfg, str(tmp_path / "run"))
    assert results["epochs_run"] == 1 and results["stopped"].startswith("time budget")
    assert results["best_epoch"] == 1 and "ndcg@10" in results["test"]


def test_resume_from_a_mid_epoch_checkpoint_is_bit_exact(two_epoch_run, one_epoch_run, tmp_path,
                                                         monkeypatch):
    full_dir, full_results = two_epoch_run
    workdir = _copy(one_epoch_run, tmp_path)
    real_save = checkpoints.RunCheckpoints.save_latest

    def save_then_die(self, step, tree, meta):
        real_save(self, step, tree, meta)
        if meta.get("step_in_epoch") == 6:  # "killed" right after the 2nd mid-epoch checkpoint
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoints.RunCheckpoints, "save_latest", save_then_die)
    cfg = tiny_config(tmp_path, max_epochs=2, checkpoint_every_steps=3)
    with pytest.raises(KeyboardInterrupt):
        loop.train(cfg, workdir, resume=True)
    _, meta = _latest(workdir)
    assert (meta["epoch"], meta["step_in_epoch"]) == (1, 6) and len(meta["partial"]["losses"]) == 6
    monkeypatch.undo()
    results = loop.train(cfg, workdir, resume=True)
    a, meta_a = _latest(str(full_dir))
    b, meta_b = _latest(workdir)
    assert meta_b["epoch"] == 2 and meta_b["step_in_epoch"] == 0
    assert meta_a["global_step"] == meta_b["global_step"]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert [r["train_loss"] for r in _jsonl(str(full_dir))] == [r["train_loss"] for r in _jsonl(workdir)]
    assert results["test"] == full_results["test"]


def _epoch(cfg, flat):
    """One epoch of ``cfg`` through the flat or the NNX-state step: (stats, state leaves as numpy)."""
    cfg = load_specs(cfg)
    dataset = data_lib.prepare_dataset(cfg.data)
    inputs, targets = batches_lib.training_windows(dataset.train, cfg.model.max_len)
    windows = {"inputs": np.asarray(inputs, np.int32), "targets": np.asarray(targets, np.int32)}
    graphdef, state = build_state(cfg.model, dataset.n_items, seed=cfg.seed)
    optimizer = steps.make_optimizer(cfg.train, 100)
    opt_state = optimizer.init(state.params)
    loss = build_loss(cfg.loss, n_items=dataset.n_items)
    step = steps.make_train_step(cfg.model, loss, optimizer)
    meta = {"global_step": 7, "epoch": 0}  # as if 7 steps ran before: keys fold in the step
    state, opt_state, stats = loop.train_epoch(cfg, 0, windows, step, graphdef, state, opt_state,
                                               meta, writer=None, warm=False, flat=flat)
    leaves = jax.tree.leaves((state, opt_state))
    return stats, [np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
                              else x) for x in leaves]


def test_flat_step_matches_the_nnx_state_step_bit_for_bit(tmp_path):
    # The trainer steps through steps.flat_train_step (state packed into a few arrays, key folded
    # and batch picked from a block inside the jit); the mesh path passes the NNX state itself. Same losses, same params and
    # Adam moments, bit for bit, over an epoch with dropout whose steps fill one block of
    # loop.BLOCK_STEPS batches and part of a second.
    cfg = tiny_config(tmp_path, log_every=4, batch_size=8)
    flat_stats, flat_leaves = _epoch(cfg, flat=True)
    nnx_stats, nnx_leaves = _epoch(cfg, flat=False)
    assert loop.BLOCK_STEPS < flat_stats["steps_run"] == nnx_stats["steps_run"] < 2 * loop.BLOCK_STEPS
    assert flat_stats["train_loss"] == nnx_stats["train_loss"]
    assert flat_stats["tokens"] == nnx_stats["tokens"] > 0
    assert len(flat_leaves) == len(nnx_leaves)
    for x, y in zip(flat_leaves, nnx_leaves):
        np.testing.assert_array_equal(x, y)


def test_flat_step_reports_the_first_non_finite_step(tmp_path):
    cfg = tiny_config(tmp_path, log_every=2, lr=float("inf"))
    for flat in (True, False):
        with pytest.raises(loop.NonFiniteLossError, match=r"global step (\d+)") as err:
            _epoch(cfg, flat=flat)
        # lr = inf: the first update makes the params inf, so the second step (global 7 + 1) is
        # the first non-finite one in both paths.
        assert "global step 8:" in str(err.value), str(err.value)
