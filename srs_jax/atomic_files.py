"""Atomic file writes: a temporary name in the same folder, then ``os.replace``, so a killed
process never leaves a half-written file. Dependency-free (the kernel benchmarks import it on
machines that have only jax)."""

from __future__ import annotations

import json
import os
import tempfile


def write_text_atomic(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json_atomic(path: str, obj, **dumps_kwargs) -> None:
    write_text_atomic(path, json.dumps(obj, **dumps_kwargs) + "\n")
