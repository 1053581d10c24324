"""Two processes on JAX's distributed runtime (CPU devices, gloo collectives, a local coordinator)
against one process with the same two devices, through ``python -m experiments.train``.

One chain of runs (the module fixture), the runs as a user would start them:

* ``one``: one process, 2 forced devices, 3 epochs, uninterrupted (the reference);
* ``two``: 2 processes of 1 device each (``SRS_JAX_*`` variables), killed: process 1 is killed
  once the epoch-1 checkpoint exists, and process 0's next collective fails: one ``error:``
  line;
* resumed by ONE process with 2 devices up to epoch 2 (another process count, the same mesh), then
  by two processes up to epoch 3.

The resumed run's epochs (trained by 2, 1 and 2 processes) must give the reference's losses and
validation metrics, and its final test metrics the reference's.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from srs_jax.config.launch import ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID
from tests.faults import harness
from tests.multidevice import ROOT, assert_close

HEARTBEAT_S = 5
CACHE = os.path.join(ROOT, ".cache", "jax_distributed_tests")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _args(cache: str, workdir: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "experiments.train",
            "--config", os.path.join(ROOT, "configs", "synthetic_cce.py"),
            "--config.data.synthetic.n_users=240", "--config.data.synthetic.n_items=150",
            "--config.data.synthetic.mean_length=12.0", "--config.data.split=leave_one_out",
            f"--config.data.cache_dir={cache}",
            "--config.model.hidden=16", "--config.model.max_len=12",
            "--config.train.lr=0.01", "--config.train.batch_size=32", "--config.train.max_epochs=3",
            "--config.train.patience=5", "--config.train.log_every=3",
            "--config.train.eval_batch_size=64", "--config.eval.ks=1,10",
            "--config.eval.user_chunk=48", "--config.eval.item_chunk=64",
            "--config.eval.popularity_baseline=False",
            f"--config.mesh.heartbeat_timeout_s={HEARTBEAT_S}", "--config.mesh.init_timeout_s=60",
            "--workdir", workdir, *extra]


def _start(cmd: list[str], devices: int, port: int | None = None, pid: int | None = None):
    # The compile cache of the multi-device checks: the resumed runs reuse the first runs' programs.
    env = harness.env(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
                      JAX_COMPILATION_CACHE_DIR=CACHE, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0.2)
    for name in (ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID):
        env.pop(name, None)
    if pid is not None:
        env.update({ENV_COORDINATOR: f"127.0.0.1:{port}", ENV_NUM_PROCESSES: "2",
                    ENV_PROCESS_ID: str(pid)})
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(procs, timeout: float = 240) -> list[subprocess.CompletedProcess]:
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=timeout)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


def _pair(cmd: list[str]):
    port = free_port()
    return [_start(cmd, 1, port, pid) for pid in (0, 1)]


def _checkpoint_done(workdir: str) -> bool:
    base = os.path.join(workdir, "checkpoints", "latest")
    return os.path.isdir(base) and any(
        os.path.isfile(os.path.join(base, n, "checksums.json")) for n in os.listdir(base) if n.isdigit())


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multiprocess")
    cache, one, two = str(tmp / "cache"), str(tmp / "one"), str(tmp / "two")
    t0 = time.perf_counter()
    started = []
    try:
        started.append(_start(_args(cache, one), 2))  # the reference, alongside the pair
        pair = _pair(_args(cache, two))
        started += pair
        deadline = time.monotonic() + 240
        while not _checkpoint_done(two):
            assert all(p.poll() is None for p in pair), _finish(pair)[0].stderr[-3000:]
            assert time.monotonic() < deadline, "no checkpoint from the two processes"
            time.sleep(0.02)
        pair[1].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        survivor, _ = _finish(pair)
        survivor_s = time.monotonic() - killed_at
        reference = _finish(started[:1])[0]
        assert reference.returncode == 0, reference.stderr[-3000:]
        # Another process count (one process, both devices), then two processes again.
        single = _finish([_start(_args(cache, two, "--resume", "--config.train.max_epochs=2"), 2)])[0]
        assert single.returncode == 0, single.stderr[-3000:]
        final = _finish(_pair(_args(cache, two, "--resume")))
        for p in final:
            assert p.returncode == 0, p.stderr[-3000:]
        yield dict(one=one, two=two, survivor=survivor, survivor_s=survivor_s, final=final,
                   seconds=time.perf_counter() - t0)
    finally:
        for p in started:
            if p.poll() is None:
                p.kill()
                p.communicate()


def _rows(workdir: str) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _results(workdir: str) -> dict:
    with open(os.path.join(workdir, "results.json")) as f:
        return json.load(f)


def test_killed_process_ends_the_other_with_one_line(chain):
    # Gloo reports the lost peer at once; a collective that hangs (NCCL) ends at the heartbeat.
    line = harness.error_line(chain["survivor"], "another process of this run", "--resume",
                              "in every process")
    assert chain["survivor"].returncode != 0
    assert chain["survivor_s"] < HEARTBEAT_S + 60, chain["survivor_s"]
    assert "epoch 1" in line, line


def test_processes_give_the_one_process_run(chain):
    one, two = _rows(chain["one"]), _rows(chain["two"])
    assert [r["epoch"] for r in two] == [1, 2, 3] and [r["epoch"] for r in one] == [1, 2, 3]
    assert_close("train loss", [r["train_loss"] for r in two], [r["train_loss"] for r in one],
                 1e-6, 1e-7)
    for r2, r1 in zip(two, one):
        assert r2["val"].keys() == r1["val"].keys()
        assert_close(f"val epoch {r1['epoch']}", list(r2["val"].values()),
                     list(r1["val"].values()), 0.0, 1e-9)
    res_one, res_two = _results(chain["one"]), _results(chain["two"])
    for split in ("val", "test"):
        assert res_two[split].keys() == res_one[split].keys()
        assert_close(split, list(res_two[split].values()), list(res_one[split].values()), 0.0, 1e-9)
    assert res_one["test"]["hitrate@10"] > 0, res_one["test"]  # not a degenerate run
    assert res_two["best_checkpoint_epoch"] == res_one["best_checkpoint_epoch"]


def test_only_process_zero_reports(chain):
    first, second = chain["final"]
    assert "[srs_jax] epoch 3:" in first.stderr and "[srs_jax] test:" in first.stderr
    assert "[srs_jax]" not in second.stderr, second.stderr[-2000:]
    resumes = [json.loads(line) for line in open(os.path.join(chain["two"], "resumes.jsonl"))]
    changed = [sorted(r["changed"]) for r in resumes]
    assert changed == [["train.max_epochs"], ["train.max_epochs"]], resumes
