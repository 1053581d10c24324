"""Faults of the command line and the run folder that stop before JAX loads: one ``error:`` line,
the right exit status, no traceback, and a good run left byte for byte intact."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from tests.faults import harness
from tests.faults.harness import error_line, run, snapshot, assert_intact

COMMANDS = ("experiments.train", "experiments.evaluate", "experiments.prepare",
            "experiments.grid_search", "experiments.report")


@pytest.mark.parametrize("module", ["experiments.train", "experiments.grid_search"])
def test_override_of_unknown_field_without_config(module, tmp_path):
    p = run(module, "--workdir", tmp_path / "x", "--out", tmp_path / "g", "--config.train.epoch=3")
    error_line(p, "unknown config field", "epoch", "configs/base.py", status=2)
    assert not (tmp_path / "x").exists()


def test_override_of_unknown_field_with_config(tiny, tmp_path):
    p = run("experiments.train", *tiny, "--workdir", tmp_path / "x", "--config.model.hiden=3")
    error_line(p, "hiden", status=2)


def test_override_with_a_value_of_the_wrong_type(tiny, tmp_path):
    error_line(run("experiments.train", *tiny, "--workdir", tmp_path / "x", "--config.train.lr=abc"),
               "lr", "abc", status=2)


def test_config_argument_that_get_config_rejects(tmp_path):
    p = run("experiments.train", "--config", "configs/base.py:netflix", "--workdir", tmp_path / "x")
    line = error_line(p, "config.data.name='netflix' is unknown", status=2)
    assert "File " not in line


def test_missing_config_file(tmp_path):
    error_line(run("experiments.train", "--config", "configs/nope.py", "--workdir", tmp_path / "x"),
               "config file configs/nope.py not found", status=2)


def test_config_file_with_a_syntax_error(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def get_config(:\n    pass\n")
    error_line(run("experiments.train", "--config", bad, "--workdir", tmp_path / "x"), "bad.py|syntax",
               status=2)


def test_config_file_without_get_config(tmp_path):
    bad = tmp_path / "empty_config.py"
    bad.write_text("x = 1\n")
    error_line(run("experiments.train", "--config", bad, "--workdir", tmp_path / "x"),
               "empty_config.py defines no get_config", status=2)


def test_unknown_flag(tmp_path):
    error_line(run("experiments.train", "--epochs=3", "--workdir", tmp_path / "x"), "epochs", status=2)


def test_unexpected_positional_argument(tiny, tmp_path):
    error_line(run("experiments.train", *tiny, "--workdir", tmp_path / "x", "extra"),
               "unexpected arguments", status=2)


@pytest.mark.parametrize("module", COMMANDS)
def test_help_exits_0_and_points_at_the_config_docs(module):
    p = run(module, "--help")
    assert p.returncode == 0, p.stderr
    assert "configs/base.py" in p.stdout and "--debug" in p.stdout
    assert "Traceback" not in p.stderr


def test_evaluate_help_examples_are_flags_it_accepts():
    text = run("experiments.evaluate", "--help").stdout
    assert "--ks=1,10" in text and "--config.eval" not in text


def test_debug_switch_shows_the_traceback(tmp_path):
    for extra in ({"SRS_JAX_DEBUG": "1"}, {}):
        args = ["--workdir", tmp_path / "x", "--config.train.epoch=3"] + (["--debug"] if not extra else [])
        p = run("experiments.train", *args, extra_env=extra)
        assert p.returncode != 0 and "Traceback" in p.stderr


# ----------------------------------------------------------------------------- the run folder

def test_workdir_is_a_regular_file(tiny, tmp_path):
    f = tmp_path / "file"
    f.write_text("keep me")
    error_line(run("experiments.train", *tiny, "--workdir", f), "is a file, not a folder", str(f))
    assert f.read_text() == "keep me"


def test_workdir_below_a_regular_file(tiny, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    error_line(run("experiments.train", *tiny, "--workdir", f / "sub"), "cannot be created", str(f))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_workdir_not_writable(tiny, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    error_line(run("experiments.train", *tiny, "--workdir", ro / "run"), "not writable|cannot be created")


@pytest.mark.parametrize("root", ["/sys", "/proc"])
def test_workdir_on_a_file_system_that_refuses_folders(tiny, root):
    if not os.path.isdir(root):
        pytest.skip(f"no {root} here")
    error_line(run("experiments.train", *tiny, "--workdir", f"{root}/srs_jax_fault_run"),
               f"{root}/srs_jax_fault_run", "--workdir")


def test_no_workdir_at_all(tmp_path):
    p = run("experiments.train", "--config", "configs/base.py", "--config.workdir=")
    error_line(p, "--workdir")


def test_fresh_run_into_a_folder_that_holds_a_run(good_run, tiny):
    before = snapshot(good_run)
    error_line(run("experiments.train", *tiny, "--workdir", good_run), "already holds a run",
               "--resume")
    assert_intact(good_run, before)


def test_second_training_on_a_locked_folder(good_run, tiny):
    before = snapshot(good_run)
    with open(os.path.join(good_run, ".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running training holds it
        p = run("experiments.train", *tiny, "--workdir", good_run, "--resume")
        error_line(p, "in use by another process", good_run)
        p = run("experiments.evaluate", "--workdir", good_run)
        error_line(p, "in use by another process")
    assert_intact(good_run, before)


def test_kill_9_leaves_no_stale_lock(tmp_path):
    code = textwrap.dedent(f"""
        import sys, time
        from srs_jax.training.workdir import RunLock
        RunLock({str(tmp_path)!r}).acquire()
        print("locked", flush=True)
        time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", code], cwd=harness.ROOT, env=harness.env(),
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        from srs_jax.training.workdir import RunLock, WorkdirError

        with pytest.raises(WorkdirError, match="in use"):
            RunLock(str(tmp_path)).acquire()
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        RunLock(str(tmp_path)).acquire().release()  # the OS dropped the lock with the process
    finally:
        if child.poll() is None:
            child.kill()
        child.stdout.close()


def test_a_failed_fresh_command_leaves_no_empty_folder(tmp_path):
    from srs_jax.training import workdir as workdir_lib

    path = tmp_path / "new"
    folder = workdir_lib.open_run(str(path), _Cfg(), resume=False)
    folder.close()
    assert not path.exists()


class _Cfg:
    def to_dict(self):
        return {"train": {"max_epochs": 1}}


# ----------------------------------------------------------------------------- other commands

def test_evaluate_without_workdir():
    error_line(run("experiments.evaluate"), "--workdir is required", status=2)


def test_evaluate_bad_ks(good_run):
    error_line(run("experiments.evaluate", "--workdir", good_run, "--ks=a,b"), "--ks", status=2)


def test_evaluate_on_a_missing_folder(tmp_path):
    error_line(run("experiments.evaluate", "--workdir", tmp_path / "nope"), "does not exist")


def test_evaluate_on_a_folder_that_is_no_run(tmp_path):
    error_line(run("experiments.evaluate", "--workdir", tmp_path), "config.json not found")


def test_evaluate_with_corrupt_config_json(good_run):
    path = os.path.join(good_run, "config.json")
    with open(path, "w") as f:
        f.write('{"seed": 4')
    error_line(run("experiments.evaluate", "--workdir", good_run), "config.json", "not valid JSON")


def test_evaluate_with_a_truncated_checkpoint(good_run):
    target = harness.checkpoint_files(good_run, "best")[0]
    with open(target, "r+b") as f:
        f.truncate(os.path.getsize(target) // 2)
    error_line(run("experiments.evaluate", "--workdir", good_run), os.path.basename(target),
               "truncated")


def test_evaluate_without_checkpoints(good_run):
    import shutil

    shutil.rmtree(os.path.join(good_run, "checkpoints"))
    error_line(run("experiments.evaluate", "--workdir", good_run), "no best checkpoint")


def test_prepare_without_config():
    error_line(run("experiments.prepare"), "--config", status=2)


def test_prepare_with_a_missing_raw_file(tmp_path):
    cfg = tmp_path / "cfg.py"
    cfg.write_text(textwrap.dedent(f"""
        from configs import base
        def get_config():
            c = base.get_config("movielens_20m")
            c.data.path = {str(tmp_path / 'ratings.csv')!r}
            return c
    """))
    error_line(run("experiments.prepare", "--config", cfg), "ratings.csv", "not found")


def test_prepare_with_an_empty_csv(tmp_path):
    (tmp_path / "ratings.csv").write_text("")
    cfg = tmp_path / "cfg.py"
    cfg.write_text(textwrap.dedent(f"""
        from configs import base
        def get_config():
            c = base.get_config("movielens_20m")
            c.data.path = {str(tmp_path / 'ratings.csv')!r}
            c.data.cache_dir = {str(tmp_path / 'cache')!r}
            return c
    """))
    error_line(run("experiments.prepare", "--config", cfg), "ratings.csv", "is empty")


def test_report_without_inputs():
    error_line(run("experiments.report"), "nothing to report", status=2)


def test_report_on_a_missing_path(tmp_path):
    error_line(run("experiments.report", tmp_path / "nope.json", "--out", tmp_path / "o"),
               "nope.json", "not found")


def test_report_with_corrupt_results_json(good_run, tmp_path):
    path = os.path.join(good_run, "results.json")
    with open(path, "w") as f:
        f.write("")
    error_line(run("experiments.report", good_run, "--out", tmp_path / "o", "--noplots"),
               "results.json", "empty")


def test_grid_search_with_bad_grid_override(tmp_path):
    error_line(run("experiments.grid_search", "--out", tmp_path / "g", "--grid.batch_sizes=3"),
               "batch_sizes", status=2)
