"""Telling an out-of-memory failure apart from a bug, so that sweeps can record it and go on."""

from __future__ import annotations

_OOM_MARKERS = ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory", "OUT_OF_MEMORY",
                "OOM when allocating")


def is_out_of_memory(error: BaseException) -> bool:
    """True for host ``MemoryError`` and XLA's RESOURCE_EXHAUSTED (device allocation) errors."""
    if isinstance(error, MemoryError):
        return True
    # XlaRuntimeError / JaxRuntimeError (RuntimeError subclasses whose module moved between jax
    # versions) are matched by their message.
    return isinstance(error, RuntimeError) and any(m in str(error) for m in _OOM_MARKERS)


def short_message(error: BaseException, limit: int = 300) -> str:
    """``Type: first line of the message`` (one line, at most ``limit`` characters)."""
    text = " ".join(str(error).split())
    out = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return out if len(out) <= limit else out[: limit - 3] + "..."
