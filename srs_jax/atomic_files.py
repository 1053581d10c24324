"""Atomic file writes: a temporary name in the same folder, then ``os.replace``, so a killed
process never leaves a half-written file; the file gets the mode a plain ``open`` would give
(0666 & ~umask, e.g. 0644), not the 0600 of the temporary file. Dependency-free (the kernel
benchmarks import it on machines that have only jax); ``srs_jax.training.run_files`` writes every
run file through it."""

from __future__ import annotations

import json
import os
import tempfile


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Writes ``data`` to ``path`` under a temporary name, then renames it (mode 0666 & ~umask)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_text_atomic(path: str, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def write_json_atomic(path: str, obj, **dumps_kwargs) -> None:
    write_text_atomic(path, json.dumps(obj, **dumps_kwargs) + "\n")
