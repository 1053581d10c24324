"""Helpers of the fault suite: the tiny run, commands as subprocesses, and the checks every fault
shares (one ``error:`` line, no traceback, a good run folder left byte for byte intact)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOOP_SOURCE = os.path.join(ROOT, "srs_jax", "training", "loop.py")


def tiny_args(cache_dir: str) -> list[str]:
    """A run of a few seconds on CPU: 200 synthetic users, 120 items, one epoch of 2 steps."""
    return ["--config", os.path.join(ROOT, "configs", "synthetic_cce.py"),
            "--config.data.synthetic.n_users=200", "--config.data.synthetic.n_items=120",
            "--config.train.max_epochs=1", "--config.model.hidden=16",
            "--config.eval.ks=1,5,10", f"--config.data.cache_dir={cache_dir}"]


def env(**extra) -> dict:
    out = dict(os.environ)
    out["PYTHONPATH"] = ROOT + os.pathsep + out.get("PYTHONPATH", "")
    out.setdefault("JAX_PLATFORMS", "cpu")
    out.pop("SRS_JAX_DEBUG", None)
    out.update({k: str(v) for k, v in extra.items()})
    return out


def run(module: str, *args, timeout: float = 300, extra_env: dict | None = None,
        **kwargs) -> subprocess.CompletedProcess:
    """``python -m <module> args`` from the repository root."""
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          env=env(**(extra_env or {})), **kwargs)


def error_line(p: subprocess.CompletedProcess, *needles: str, status: int | None = None) -> str:
    """Asserts the command failed with one ``error:`` line on stderr mentioning every needle (and
    nothing else but ``[srs_jax]`` progress lines); returns that line."""
    assert p.returncode != 0, f"exit 0; stderr:\n{p.stderr[-3000:]}"
    if status is not None:
        assert p.returncode == status, (p.returncode, p.stderr[-2000:])
    assert "Traceback" not in p.stderr, p.stderr[-4000:]
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1, p.stderr[-3000:]
    other = [ln for ln in lines if not ln.startswith(("error:", "[srs_jax]", "[grid]"))]
    assert not other, f"noise on stderr: {other[:5]}"
    line = errors[0]
    for needle in needles:
        assert re.search(needle, line), f"{needle!r} not in {line!r}"
    record(line)
    return line


def record(line: str) -> None:
    """Appends ``<test id>\t<line>`` to ``$SRS_JAX_FAULT_LINES`` when set (the table of what each
    fault prints)."""
    path = os.environ.get("SRS_JAX_FAULT_LINES")
    if path:
        test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
        with open(path, "a") as f:
            f.write(f"{test}\t{line}\n")


def snapshot(folder: str) -> dict[str, bytes]:
    """Every file below ``folder`` (but the lock file) and its bytes."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, folder)
            if rel != ".lock":
                with open(path, "rb") as f:
                    out[rel] = f.read()
    return out


def assert_intact(folder: str, before: dict[str, bytes]) -> None:
    after = snapshot(folder)
    assert sorted(after) == sorted(before), (set(after) ^ set(before))
    changed = [k for k in before if before[k] != after[k]]
    assert not changed, f"changed: {changed}"


def loop_calls(name: str) -> bool:
    """Whether ``loop.py`` uses ``name`` (the integration of a run-folder module)."""
    with open(LOOP_SOURCE) as f:
        return name in f.read()


def checkpoint_files(workdir: str, slot: str = "latest") -> list[str]:
    """The files of the newest checkpoint of ``slot``, largest first."""
    base = os.path.join(workdir, "checkpoints", slot)
    step = max((n for n in os.listdir(base) if n.isdigit()), key=int)
    files = []
    for root, _, names in os.walk(os.path.join(base, step)):
        files += [os.path.join(root, n) for n in names if n != "checksums.json"]
    return sorted(files, key=lambda p: (-os.path.getsize(p), p))
