"""Shared by the multi-device check scripts (run in a subprocess with 8 forced CPU devices) and
the tests that start them: the tolerance check the scripts use, and the subprocess runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def assert_close(name, got, want, rtol, atol):
    """``|got - want| <= atol + rtol |want|`` elementwise (float64), naming the worst element."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        raise AssertionError(f"{name}: shape {got.shape} != {want.shape}")
    err = np.abs(got - want) - (atol + rtol * np.abs(want))
    if np.any(err > 0):
        i = np.unravel_index(np.argmax(err), err.shape)
        raise AssertionError(f"{name}: max excess {err[i]:.3g} at {i}: got {got[i]}, want {want[i]}")


def run_checks(script: str, names, timeout: float) -> tuple[dict, subprocess.CompletedProcess]:
    """Runs ``script NAME...`` on the CPU backend (the script forces its devices) and returns its
    ``CHECK {...}`` lines by check name, and the finished process."""
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run([sys.executable, script, *names], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("CHECK {"):
            row = json.loads(line[len("CHECK "):])
            results[row["check"]] = row
    return results, proc
