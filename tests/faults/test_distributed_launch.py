"""Faults of a multi-process launch: one ``error:`` line, a non-zero exit within the configured
timeout, no traceback, and an earlier good run left intact."""

from __future__ import annotations

import socket
import time

from srs_jax.config.launch import ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID
from srs_jax.training import runtime_guard
from tests.faults.harness import assert_intact, error_line, run, snapshot


def _closed_port() -> int:
    """A local port with nothing listening (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(pid: int, port: int) -> dict:
    return {ENV_COORDINATOR: f"127.0.0.1:{port}", ENV_NUM_PROCESSES: 2, ENV_PROCESS_ID: pid}


def test_unreachable_coordinator(good_run, tiny):
    before = snapshot(good_run)
    port = _closed_port()
    t0 = time.monotonic()
    p = run("experiments.train", *tiny, "--workdir", good_run, "--resume",
            "--config.mesh.init_timeout_s=2", extra_env=_launch(1, port), timeout=120)
    seconds = time.monotonic() - t0
    error_line(p, "cannot reach the coordinator", f"127.0.0.1:{port}", "init_timeout_s=2s",
               "start process 0", status=1)
    assert seconds < 2 + 30, seconds  # the timeout plus start-up, not JAX's default 300 s
    assert_intact(good_run, before)  # only process 0 would write (resumes.jsonl)


def test_other_processes_never_join(tmp_path, tiny):
    # Process 0 starts the coordinator and waits for process 1, which never comes: the runtime
    # aborts it from C++, and that abort is reported as one line.
    p = run("experiments.train", *tiny, "--workdir", tmp_path / "run",
            "--config.mesh.init_timeout_s=1", extra_env=_launch(0, _closed_port()), timeout=120)
    error_line(p, "not every process joined", "init_timeout_s")
    assert p.returncode != 0


def test_incomplete_launch_variables(tmp_path, tiny):
    p = run("experiments.train", *tiny, "--workdir", tmp_path / "run",
            extra_env={ENV_NUM_PROCESSES: 2, ENV_PROCESS_ID: 1})
    error_line(p, ENV_COORDINATOR, "host:port")
    assert not (tmp_path / "run").exists()


def test_runtime_reports_become_one_sentence():
    # The reports the runtime logs before it aborts a process (abridged from real ones).
    heartbeat = ("E1207 08:12:39.857596   15121 coordination_service.cc:1549] Use error polling to "
                 "propagate the following error to all tasks: UNAVAILABLE: The following tasks are "
                 "unhealthy (stopped sending heartbeats):\n1\n")
    register = ("F1207 08:11:32.822122   14739 client.h:80] Terminating process because the JAX "
                "distributed service detected fatal errors. absl::Status: DEADLINE_EXCEEDED: "
                "Deadline Exceeded\n\nRPC: /xla.coordination.CoordinationService/RegisterTask\n")
    other = "F1207 client.h:80] Terminating process. absl::Status: INTERNAL: boom\n"
    assert "stopped responding" in runtime_guard.message(heartbeat, "HINT")
    assert "HINT" in runtime_guard.message(heartbeat, "HINT")
    assert "not every process joined" in runtime_guard.message(register, "HINT")
    assert "(INTERNAL: boom)" in runtime_guard.message(other, "HINT")
