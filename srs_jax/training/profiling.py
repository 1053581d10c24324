"""Memory and time profiling of a training run (written to ``metrics.jsonl`` and ``results.json``).

Epoch times exclude the first train step of the process (compilation), reported as ``compile_s``.
Peak device memory comes from ``device.memory_stats()["peak_bytes_in_use"]``, a high-water mark
over the whole process that JAX cannot reset. So "training alone" is read right after the first
epoch's training steps, before the first validation; "including evaluation" is read at the end of
the run. Backends without memory statistics (CPU) give ``None`` (JSON ``null``), never 0.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import jax

MEMORY_UNAVAILABLE_NOTE = "the backend reports no memory statistics (e.g. CPU): peak memory is null"


def peak_memory_bytes(device: jax.Device | None = None) -> int | None:
    """Peak bytes in use on ``device`` (default: first local device) or ``None`` if unknown."""
    device = device or jax.local_devices()[0]
    try:
        stats = device.memory_stats()
    except Exception:  # some backends raise instead of returning None
        return None
    if not stats or "peak_bytes_in_use" not in stats:
        return None
    return int(stats["peak_bytes_in_use"])


@dataclass
class RunProfile:
    """Accumulates per-epoch timings and token counts; ``summary()`` gives the results fields."""

    train_seconds: list[float] = field(default_factory=list)  # steps only, per epoch
    epoch_seconds: list[float] = field(default_factory=list)  # steps + validation, per epoch
    steps: int = 0
    tokens: int = 0  # real (non-padded) target tokens
    peak_train_bytes: int | None = None
    peak_total_bytes: int | None = None
    compile_seconds: float = 0.0  # first train step of this process (compile + one step)
    _train_peak_taken: bool = False

    def end_training_phase(self, seconds: float, steps: int, tokens: int) -> None:
        self.train_seconds.append(seconds)
        self.steps += steps
        self.tokens += tokens
        if not self._train_peak_taken:
            self.peak_train_bytes = peak_memory_bytes()
            self._train_peak_taken = True

    def end_epoch(self, seconds: float) -> None:
        self.epoch_seconds.append(seconds)
        self.peak_total_bytes = peak_memory_bytes()

    def finish(self) -> None:
        self.peak_total_bytes = peak_memory_bytes()

    def summary(self) -> dict:
        train_s = sum(self.train_seconds)
        mean = lambda xs: (sum(xs) / len(xs)) if xs else None  # noqa: E731
        out = {
            "peak_memory_bytes": self.peak_total_bytes,
            "peak_memory_train_bytes": self.peak_train_bytes,
            "epoch_time_s": mean(self.epoch_seconds),
            "epoch_train_time_s": mean(self.train_seconds),
            "steps_per_s": (self.steps / train_s) if train_s > 0 else None,
            "tokens_per_s": (self.tokens / train_s) if train_s > 0 else None,
            "compile_s": self.compile_seconds,
            "train_steps": self.steps,
            "train_tokens": self.tokens,
            "device": str(jax.local_devices()[0].device_kind),
            "backend": jax.default_backend(),
        }
        if self.peak_total_bytes is None:
            out["memory_note"] = MEMORY_UNAVAILABLE_NOTE
        return out


class Timer:
    """``with Timer() as t: ...; t.seconds`` (wall clock, caller synchronises the device)."""

    def __enter__(self):
        self._t0 = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self._t0
        return False
