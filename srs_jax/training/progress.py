"""Progress of an epoch, visible on a terminal and in a log file alike.

``Progress(total, initial=0, desc="epoch 1/4")`` has the part of tqdm's interface the loop uses
(``update(n)``, ``set_postfix(**values)``, ``close()``). On a terminal it is a tqdm bar. Anywhere
else (a log file, a pipe, a batch job) it prints a line to stderr at most every ``interval``
seconds (``SRS_JAX_PROGRESS_SECONDS``, default 30; 0 = every update)::

    [srs_jax] epoch 1/4: step 120/400 (30%), loss 5.1234, 12.3 steps/s, epoch ETA 23s
"""

from __future__ import annotations

import os
import sys
import time

from tqdm import tqdm

INTERVAL_ENV = "SRS_JAX_PROGRESS_SECONDS"
DEFAULT_INTERVAL = 30.0


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL)))
    except ValueError:
        return DEFAULT_INTERVAL


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """Steps of one epoch; a bar on a terminal, periodic lines elsewhere."""

    def __init__(self, total: int, initial: int = 0, desc: str = "", *, stream=None,
                 interval: float | None = None, terminal: bool | None = None, clock=time.monotonic):
        self.total, self.done, self.desc = int(total), int(initial), desc
        self._stream = stream if stream is not None else sys.stderr
        self._interval = _interval() if interval is None else float(interval)
        self._clock = clock
        self._start = self._last = clock()
        self._start_done = self.done
        self._postfix: dict = {}
        if terminal is None:
            isatty = getattr(self._stream, "isatty", None)
            terminal = bool(isatty and isatty())
        self._bar = (tqdm(total=total, initial=initial, desc=desc, unit="step", mininterval=2.0,
                          leave=False, file=self._stream) if terminal else None)

    def set_postfix(self, **values) -> None:
        self._postfix = values
        if self._bar is not None:
            self._bar.set_postfix(**values)

    def update(self, n: int = 1) -> None:
        self.done += int(n)
        if self._bar is not None:
            self._bar.update(n)
            return
        now = self._clock()
        if now - self._last >= self._interval and self.done < self.total:
            self._last = now
            self._stream.write(self.line(now) + "\n")
            self._stream.flush()

    def line(self, now: float | None = None) -> str:
        """The progress line printed off a terminal."""
        now = self._clock() if now is None else now
        elapsed = max(now - self._start, 1e-9)
        rate = (self.done - self._start_done) / elapsed
        parts = [f"step {self.done}/{self.total} ({100 * self.done // max(self.total, 1)}%)"]
        if "loss" in self._postfix:
            parts.append(f"loss {self._postfix['loss']}")
        parts.append(f"{rate:.1f} steps/s")
        if rate > 0:
            parts.append(f"epoch ETA {_duration((self.total - self.done) / rate)}")
        return f"[srs_jax] {self.desc}: " + ", ".join(parts)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
