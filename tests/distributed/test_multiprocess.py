"""Two processes on JAX's distributed runtime (CPU devices, gloo collectives, a local coordinator)
against one process with the same four devices, through ``python -m experiments.train``, on a
2 data x 2 vocab mesh: each process feeds half of every batch and holds its data row of the
mesh, the item table split over its two devices.

One chain of runs in one test, started as a user would start them:

* ``one``: one process, 4 forced devices, 3 epochs, uninterrupted (the reference);
* ``two``: 2 processes of 2 devices each (``SRS_JAX_*`` variables), killed: process 1 is killed
  once the epoch-1 checkpoint exists, and process 0's next collective fails: one ``error:``
  line;
* resumed by ONE process with 4 devices up to epoch 2 (another process count, the same mesh), then
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

from srs_jax.config import ConfigError, Launch, MeshSpec, load_specs, resolve_launch
from srs_jax.config.launch import ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID
from tests.faults import harness
from tests.multidevice import ROOT, assert_close

HEARTBEAT_S = 10  # the runtime's safety net; gloo reports a killed peer at once
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
            "--config.eval.popularity_baseline=False", "--config.mesh.vocab=2",
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
    return [_start(cmd, 2, port, pid) for pid in (0, 1)]


def _checkpoint_done(workdir: str) -> bool:
    base = os.path.join(workdir, "checkpoints", "latest")
    return os.path.isdir(base) and any(
        os.path.isfile(os.path.join(base, n, "checksums.json")) for n in os.listdir(base) if n.isdigit())


def _rows(workdir: str) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _results(workdir: str) -> dict:
    with open(os.path.join(workdir, "results.json")) as f:
        return json.load(f)


def _run_chain(tmp) -> dict:
    """The runs of the module docstring; the finished processes and folders."""
    cache, one, two = str(tmp / "cache"), str(tmp / "one"), str(tmp / "two")
    started = []
    try:
        started.append(_start(_args(cache, one), 4))  # the reference, alongside the pair
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
        single = _start(_args(cache, two, "--resume", "--config.train.max_epochs=2"), 4)
        started.append(single)
        single = _finish([single])[0]
        assert single.returncode == 0, single.stderr[-3000:]
        final = _pair(_args(cache, two, "--resume"))
        started += final
        final = _finish(final)
        for p in final:
            assert p.returncode == 0, p.stderr[-3000:]
        return dict(one=one, two=two, survivor=survivor, survivor_s=survivor_s, final=final)
    finally:
        for p in started:
            if p.poll() is None:
                p.kill()
                p.communicate()


# One test (not one per check): a module fixture would run again in each pytest-xdist worker.
def test_two_processes_train_as_one(tmp_path):
    chain = _run_chain(tmp_path)

    # The kill: the other process ends with one line, at once (gloo reports the lost peer; a
    # collective that hangs instead, as NCCL's may, ends at the runtime's heartbeat timeout).
    line = harness.error_line(chain["survivor"], "another process of this run", "--resume",
                              "in every process", "epoch 1")
    assert chain["survivor_s"] < HEARTBEAT_S + 60, (chain["survivor_s"], line)

    # Losses and metrics of every epoch (trained by 2, 1 and 2 processes) and the final test.
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

    # Only process 0 prints and writes (both resumes recorded once each).
    first, second = chain["final"]
    assert "[srs_jax] epoch 3:" in first.stderr and "[srs_jax] test:" in first.stderr
    assert "[srs_jax]" not in second.stderr, second.stderr[-2000:]
    with open(os.path.join(chain["two"], "resumes.jsonl")) as f:
        changed = [sorted(json.loads(line)["changed"]) for line in f]
    assert changed == [["train.max_epochs"], ["train.max_epochs"]], changed


# ---------------------------------------------------------------------------------------------
# How a process learns its place (pure, in-process).


def test_launch_precedence_config_then_variables_then_cluster():
    env = {ENV_COORDINATOR: "10.0.0.1:1234", ENV_NUM_PROCESSES: "4", ENV_PROCESS_ID: "3",
           "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_NTASKS": "16", "SLURM_PROCID": "5"}
    from_config = MeshSpec(coordinator_address="h:1", num_processes=2, process_id=1)
    assert resolve_launch(from_config, env) == Launch(2, 1, "h:1", source="config.mesh")
    assert resolve_launch(MeshSpec(), env) == Launch(4, 3, "10.0.0.1:1234", source="environment")
    slurm = {k: v for k, v in env.items() if not k.startswith("SRS_JAX")}
    launch = resolve_launch(MeshSpec(), slurm)
    assert (launch.num_processes, launch.process_id, launch.auto, launch.primary) == (16, 5, True, False)
    # One task (e.g. python run inside an allocation without srun), or nothing set: one process.
    assert not resolve_launch(MeshSpec(), {**slurm, "SLURM_NTASKS": "1"}).several
    assert resolve_launch(MeshSpec(), {}) == Launch()
    assert not resolve_launch(MeshSpec(), {ENV_NUM_PROCESSES: "1"}).several


@pytest.mark.parametrize("env, needle", [
    ({ENV_NUM_PROCESSES: "2", ENV_PROCESS_ID: "0"}, ENV_COORDINATOR),
    ({ENV_NUM_PROCESSES: "2", ENV_COORDINATOR: "h:1"}, ENV_PROCESS_ID),
    ({ENV_NUM_PROCESSES: "2", ENV_COORDINATOR: "h:1", ENV_PROCESS_ID: "2"}, r"\[0, 2\)"),
    ({ENV_NUM_PROCESSES: "two"}, "not an integer"),
])
def test_incomplete_launch_variables_name_the_fix(env, needle):
    with pytest.raises(ConfigError, match=needle):
        resolve_launch(MeshSpec(), env)


def test_several_processes_need_the_mesh():
    env = {ENV_NUM_PROCESSES: "2", ENV_COORDINATOR: "h:1", ENV_PROCESS_ID: "0"}
    with pytest.raises(ConfigError, match="mesh.enabled=True"):
        resolve_launch(MeshSpec(enabled=False), env)
    with pytest.raises(ConfigError, match="mesh.enabled"):
        MeshSpec(enabled=False, num_processes=2, coordinator_address="h:1")
    with pytest.raises(ConfigError, match="init_timeout_s"):
        MeshSpec(init_timeout_s=0)
    # Configs written before the timeouts existed still load, with the defaults.
    spec = load_specs({"mesh": {"enabled": True, "num_processes": 0}}).mesh
    assert (spec.init_timeout_s, spec.heartbeat_timeout_s) == (300, 100)
