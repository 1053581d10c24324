"""Faults while a run trains (Ctrl-C, non-finite loss, full disk, settings only the catalog can
check) and the friendly surface of a good run (file modes, progress lines, evaluate, report)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from tests.faults import harness
from tests.faults.harness import error_line, run

needs_progress = pytest.mark.skipif(
    not harness.loop_calls("Progress("),
    reason="needs loop integration: loop.py must draw its epoch bar with srs_jax.training.progress.Progress")
needs_data_check = pytest.mark.skipif(
    not harness.loop_calls("check_against_data"),
    reason="needs loop integration: loop.py must call workdir.check_against_data(config, n_items) "
           "after prepare_dataset")


def test_run_files_are_0644(good_run_session):
    workdir = good_run_session[0]
    for name in ("config.json", "metrics.jsonl", "results.json", ".lock"):
        mode = stat.S_IMODE(os.stat(os.path.join(workdir, name)).st_mode)
        assert mode == 0o644 & ~_umask(), (name, oct(mode))


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@needs_progress
def test_progress_lines_when_stderr_is_not_a_terminal(good_run_session):
    err = good_run_session[1].stderr
    assert "[srs_jax] epoch 1/1: step 1/2 (50%)" in err and "steps/s" in err and "ETA" in err


def test_progress_object_off_and_on_a_terminal():
    import io

    from srs_jax.training.progress import Progress

    t = [0.0]
    out = io.StringIO()
    bar = Progress(total=10, desc="epoch 2/3", stream=out, interval=5.0, clock=lambda: t[0])
    for i in range(9):
        t[0] += 1.0
        if i == 3:
            bar.set_postfix(loss="4.2000")
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines == ["[srs_jax] epoch 2/3: step 5/10 (50%), loss 4.2000, 1.0 steps/s, epoch ETA 5s"]
    tty = io.StringIO()
    tty.isatty = lambda: True
    bar = Progress(total=4, desc="e", stream=tty, interval=0.0)
    bar.update(4)
    bar.close()
    assert "[srs_jax]" not in tty.getvalue()  # a tqdm bar instead


def test_ctrl_c_says_which_checkpoint_to_resume_from(good_run, tiny):
    proc = subprocess.Popen(
        [sys.executable, "-m", "experiments.train", *tiny, "--workdir", good_run, "--resume",
         "--config.train.max_epochs=500"], cwd=harness.ROOT, env=harness.env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if "resumed after" in line:
            break
    proc.send_signal(signal.SIGINT)
    out, rest = proc.communicate(timeout=120)
    p = subprocess.CompletedProcess(proc.args, proc.returncode, out, "".join(lines) + rest)
    line = error_line(p, "interrupted", "latest checkpoint", "--resume", status=130)
    assert good_run in line
    from srs_jax.training import workdir as workdir_lib

    workdir_lib.verify_checkpoints(good_run)  # still a good checkpoint to resume from


def test_two_trainings_on_one_folder(tiny, tmp_path):
    """The second of two concurrent trainings stops in one line; the first finishes untouched."""
    workdir = str(tmp_path / "run")
    first = subprocess.Popen([sys.executable, "-m", "experiments.train", *tiny, "--workdir", workdir],
                             cwd=harness.ROOT, env=harness.env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    lines = []
    for line in first.stderr:  # the lock is taken before this line is printed
        lines.append(line)
        if line.startswith("[srs_jax] synthetic"):
            break
    second = run("experiments.train", *tiny, "--workdir", workdir)
    out, rest = first.communicate(timeout=300)
    assert first.returncode == 0, "".join(lines) + rest
    error_line(second, "in use by another process", workdir)
    results = json.load(open(os.path.join(workdir, "results.json")))
    assert results["epochs_run"] == 1 and not os.path.exists(os.path.join(workdir, "resumes.jsonl"))


def test_ctrl_c_before_training_starts(tiny, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "experiments.train", *tiny, "--workdir",
                             tmp_path / "run"], cwd=harness.ROOT, env=harness.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    error_line(subprocess.CompletedProcess(proc.args, proc.returncode, out, err), "interrupted",
               status=130)


def test_sigterm_is_one_line_and_status_143(good_run, tiny):
    proc = subprocess.Popen([sys.executable, "-m", "experiments.train", *tiny, "--workdir", good_run,
                             "--resume", "--config.train.max_epochs=500"], cwd=harness.ROOT,
                            env=harness.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if line.startswith("[srs_jax] synthetic"):
            break
    proc.send_signal(signal.SIGTERM)
    out, rest = proc.communicate(timeout=120)
    p = subprocess.CompletedProcess(proc.args, proc.returncode, out, "".join(lines) + rest)
    error_line(p, "terminated", "--resume", status=143)


def test_evaluate_with_a_checkpoint_of_another_model_shape(good_run):
    """config.json edited by hand (valid JSON, another width): the restore fails in one line."""
    path = os.path.join(good_run, "config.json")
    config = json.load(open(path))
    config["model"]["hidden"] = 32
    with open(path, "w") as f:
        json.dump(config, f)
    p = run("experiments.evaluate", "--workdir", good_run)
    error_line(p, "cannot restore checkpoint", "does not fit this model")
    assert "Event loop is closed" not in p.stderr


def test_nonfinite_loss_before_any_checkpoint(tiny, tmp_path):
    p = run("experiments.train", *tiny, "--workdir", tmp_path / "run", "--config.train.lr=1e30",
            "--config.train.log_every=1")
    line = error_line(p, "non-finite loss", "before any checkpoint was written")
    assert "is kept" not in line


_LIMITED = ("import os, resource, sys; limit = int(sys.argv[1]); "
            "resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)); "
            "os.execv(sys.executable, [sys.executable, '-m'] + sys.argv[2:])")


def test_disk_full_while_checkpointing(tiny, tmp_path, good_run_session):
    """Every file may hold 16 KiB (RLIMIT_FSIZE, as a full disk for the checkpoint's state):
    config.json fits, the checkpoint does not."""
    p = subprocess.run([sys.executable, "-c", _LIMITED, str(16 * 1024), "experiments.train", *tiny,
                        "--workdir", str(tmp_path / "run")], cwd=harness.ROOT, env=harness.env(),
                       capture_output=True, text=True, timeout=300)
    line = error_line(p, "could not write checkpoint", "File too large", "free disk space")
    assert "Event loop is closed" not in p.stderr
    assert "no earlier checkpoint" in line and "OCDBT" not in line


@needs_data_check
@pytest.mark.parametrize("override,needle", [
    (["--config.loss.type=ce_neg", "--config.loss.num_negatives=500"], "num_negatives=500"),
    (["--config.eval.ks=1,10,500", "--config.eval.monitor=ndcg@10"], r"eval.ks has cutoffs \[500\]"),
])
def test_settings_only_the_catalog_can_check(tiny, tmp_path, override, needle):
    tiny = [a for a in tiny if not a.startswith("--config.eval.ks")]  # a repeated list override appends
    p = run("experiments.train", *tiny, "--workdir", tmp_path / "run", *override)
    error_line(p, needle, "catalog size")
    assert not (tmp_path / "run").exists()  # nothing was left behind


def test_catalog_checks_in_process():
    import ml_collections

    from srs_jax.training.workdir import check_against_data

    c = ml_collections.ConfigDict(dict(loss=dict(type="cce_neg", num_negatives=119),
                                       eval=dict(ks=[1, 10, 50]), data=dict(name="synthetic")))
    check_against_data(c, 120)
    with pytest.raises(ValueError, match="num_negatives=119 is not below the catalog size"):
        check_against_data(c, 119)
    c.loss.type = "cce"  # full losses have no negatives
    check_against_data(c, 60)
    with pytest.raises(ValueError, match=r"--config.eval.ks=1,10$"):
        check_against_data(c, 20)


def test_invalid_config_value(tiny, tmp_path):
    error_line(run("experiments.train", *tiny, "--workdir", tmp_path / "run",
                   "--config.model.hidden=0"), "model.hidden")
    assert not (tmp_path / "run").exists()


def test_evaluate_help_example_runs(good_run):
    p = run("experiments.evaluate", "--workdir", good_run, "--ks=1,10")
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.load(open(os.path.join(good_run, "eval_best.json")))
    assert set(out["test"]) >= {"ndcg@1", "ndcg@10"} and "ndcg@5" not in out["test"]
    # Cutoffs without the monitored one (ndcg@10) and the other coverage mode: the saved specs
    # are replaced, not assigned into.
    p = run("experiments.evaluate", "--workdir", good_run, "--ks=2,3", "--coverage_mode=conventional")
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.load(open(os.path.join(good_run, "eval_best.json")))
    assert {k for k in out["test"] if k.startswith("ndcg@")} == {"ndcg@2", "ndcg@3"}


def test_report_of_a_single_run_draws_its_training_curves(good_run_session, tmp_path):
    from srs_jax.experiments import reporting

    written = reporting.write_report(reporting.collect([good_run_session[0]]), str(tmp_path / "r"))
    assert "training_curves.png" in written and "step_time_vs_catalog.png" in written
