"""experiments.clock_probe's sampling loop, with nvidia-smi replaced by a fake (CI has no GPU)."""

from __future__ import annotations

import subprocess

import jax
import jax.numpy as jnp
import pytest

from experiments import clock_probe


class _FakeSmi:
    """Stands in for `nvidia-smi -lms`: prints the given lines when stopped."""

    lines: list[str] = []

    def __init__(self, cmd, **kwargs):
        assert cmd[0] == "nvidia-smi" and "--query-gpu=clocks.sm,power.draw,temperature.gpu" in cmd
        self.stopped = False

    def terminate(self):
        self.stopped = True

    def communicate(self, timeout=None):
        assert self.stopped, "the sampler must be stopped before its output is read"
        return "\n".join(self.lines) + "\n", None


def test_samples_are_parsed_and_the_first_two_dropped(monkeypatch):
    _FakeSmi.lines = ["1980, 70.5, 40", "1755, 650.25, 55", "1725, 698.0, 57",
                      "[N/A], [N/A], 57", "1440, 697.5, 58"]
    monkeypatch.setattr(subprocess, "Popen", _FakeSmi)
    fn = jax.jit(lambda x: jnp.sin(x) @ x)
    ms, samples = clock_probe.sample_while(fn, (jnp.ones((64, 64)),), seconds=0.05)
    assert ms > 0.0
    # The first two lines may predate the load; a line of N/A (no reading) is skipped.
    assert samples == [(1725.0, 698.0, 57.0), (1440.0, 697.5, 58.0)]


def test_missing_nvidia_smi_is_a_one_line_error(monkeypatch):
    def missing(*args, **kwargs):
        raise FileNotFoundError("nvidia-smi")

    monkeypatch.setattr(subprocess, "Popen", missing)
    with pytest.raises(SystemExit, match="nvidia-smi not found"):
        clock_probe.sample_while(jax.jit(jnp.sin), (jnp.ones(3),), seconds=0.01)
