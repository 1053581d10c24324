"""Background prefetch of host batches onto the device, so the host is never the bottleneck."""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterable, Iterator

import jax

_END = object()


class Prefetcher:
    """Iterates ``jax.device_put(batch)`` (or ``put(batch)``) for each batch of ``batches``,
    produced by a daemon thread that stays up to ``size`` batches ahead (``size=0``: no thread,
    put each batch on demand). An exception in the producer is re-raised in the consumer."""

    def __init__(self, batches: Iterable, size: int, device: jax.Device | None = None,
                 put: Callable | None = None):
        self._batches = batches
        self._size = int(size)
        self._put_batch = put if put is not None else lambda b: jax.device_put(b, device)
        self._stop = threading.Event()
        self._thread = None
        if self._size > 0:
            self._queue: queue.Queue = queue.Queue(maxsize=self._size)
            self._thread = threading.Thread(target=self._produce, daemon=True)
            self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            for batch in self._batches:
                if not self._put(self._put_batch(batch)):
                    return
            self._put(_END)
        except BaseException as e:  # surfaced to the consumer
            self._put(e)

    def __iter__(self) -> Iterator:
        if self._thread is None:
            for batch in self._batches:
                yield self._put_batch(batch)
            return
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
