"""The files of a run folder (docs/run_folders.md).

Every file is written under a temporary name in the same folder, flushed, then renamed, so a
killed run never leaves a half-written file; files get the usual permissions (0644 under the
default umask). Reading a missing or corrupted file raises one line naming the file.

``write_checksums(folder)`` / ``verify_checksums(folder)`` keep ``checksums.json`` (size and
CRC-32 of every file below ``folder``; docs/decisions/030-checksums.md) next to a checkpoint's files; a truncated or altered file
fails the check with its name.
"""

from __future__ import annotations

import json
import os
import zlib

import ml_collections

from srs_jax.atomic_files import write_text_atomic

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "results.json"
RESUMES_FILE = "resumes.jsonl"
CHECKSUMS_FILE = "checksums.json"


class RunFileError(ValueError):
    """A run file is missing, unreadable or corrupted (the message names it)."""


write_text = write_text_atomic  # run files: atomic, mode 0666 & ~umask (srs_jax.atomic_files)


def write_json(path: str, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def write_jsonl(path: str, rows: list[dict]) -> None:
    """Rewrites the whole log (epochs come from the checkpoint's history, so a resumed run never
    duplicates an epoch that was logged after the last checkpoint)."""
    write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def read_json(path: str, *, what: str = "file", fix: str = "") -> dict | list:
    """The JSON object in ``path``; ``RunFileError`` naming the file when it is missing, empty or
    not valid JSON."""
    fix = fix or "restore it from a copy of the run folder, or train again in another --workdir"
    if not os.path.isfile(path):
        raise RunFileError(f"{path} not found ({what}): {fix}")
    try:
        with open(path, "rb") as f:
            data = f.read()
        if not data.strip():
            raise RunFileError(f"{path} ({what}) is empty: {fix}")
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        reason = e.msg if isinstance(e, json.JSONDecodeError) else "not UTF-8 text"
        raise RunFileError(f"{path} ({what}) is not valid JSON ({reason}): {fix}") from e
    except OSError as e:
        raise RunFileError(f"cannot read {path}: {e.strerror}") from e


def read_jsonl(path: str, *, what: str = "log") -> list[dict]:
    """The rows of a JSON-lines file ([] when absent); ``RunFileError`` naming the bad line."""
    if not os.path.isfile(path):
        return []
    rows = []
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line.decode("utf-8")))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise RunFileError(f"{path} ({what}) line {n} is not valid JSON: delete the line or "
                                   "restore the file from a copy") from e
    return rows


def save_config(workdir: str, config) -> None:
    """``config.json``: a ConfigDict (``to_json_best_effort``) or a spec (``to_dict()``)."""
    if isinstance(config, ml_collections.ConfigDict):
        text = config.to_json_best_effort(indent=2)
    else:
        text = json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str)
    write_text(os.path.join(workdir, CONFIG_FILE), text + "\n")


def load_config_dict(workdir: str) -> dict:
    """``<workdir>/config.json`` as a plain dict (``RunFileError`` naming the file when absent or
    corrupted)."""
    path = os.path.join(workdir, CONFIG_FILE)
    if os.path.isdir(workdir) and not os.path.exists(path):
        raise RunFileError(f"{path} not found: --workdir {workdir} is not a run folder made by "
                           "python -m experiments.train")
    if not os.path.exists(workdir):
        raise RunFileError(f"run folder {workdir} does not exist: pass the --workdir of a run")
    config = read_json(path, what="the run's config")
    if not isinstance(config, dict):
        raise RunFileError(f"{path} does not hold a config object: restore it from a copy")
    return config


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The resolved config a run was trained with (``<workdir>/config.json``)."""
    return ml_collections.ConfigDict(load_config_dict(workdir))


def load_results(workdir: str) -> dict:
    path = os.path.join(workdir, RESULTS_FILE)
    if not os.path.exists(path):
        raise RunFileError(f"{path} not found: the run has not finished (rerun it with --resume)")
    return read_json(path, what="the run's results",
                     fix="rerun the run with --resume to write it again")


# ---------------------------------------------------------------------------- checksums

def file_digest(path: str) -> str:
    """CRC-32 of a file as 8 hex digits, read in 16 MiB blocks."""
    crc = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            crc = zlib.crc32(block, crc)
    return f"{crc:08x}"


def _files_below(folder: str) -> list[str]:
    out = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            rel = os.path.relpath(os.path.join(root, name), folder)
            if rel != CHECKSUMS_FILE:
                out.append(rel)
    return out


def write_checksums(folder: str) -> None:
    """Writes ``<folder>/checksums.json``: size and CRC-32 of every other file below ``folder``."""
    files = {rel: {"size": os.path.getsize(os.path.join(folder, rel)),
                   "crc32": file_digest(os.path.join(folder, rel))}
             for rel in _files_below(folder)}
    write_json(os.path.join(folder, CHECKSUMS_FILE), {"version": 1, "files": files})


def has_checksums(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, CHECKSUMS_FILE))


class ChecksumError(RunFileError):
    """A file does not match the checksum recorded when it was written."""


def verify_checksums(folder: str, *, what: str, fix: str) -> None:
    """Raises ``ChecksumError`` naming the first file of ``folder`` that is missing, truncated or
    altered since ``write_checksums``; ``fix`` says what to do."""
    manifest = read_json(os.path.join(folder, CHECKSUMS_FILE), what=f"checksums of {what}", fix=fix)
    entries = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(entries, dict):
        raise ChecksumError(f"{os.path.join(folder, CHECKSUMS_FILE)} is corrupted: {fix}")
    for rel, entry in sorted(entries.items()):
        path = os.path.join(folder, rel)
        if not os.path.isfile(path):
            raise ChecksumError(f"{what}: {path} is missing: {fix}")
        size = os.path.getsize(path)
        if size != entry.get("size"):
            raise ChecksumError(f"{what}: {path} is truncated or altered ({size} bytes, "
                                f"{entry.get('size')} written): {fix}")
        if file_digest(path) != entry.get("crc32"):
            raise ChecksumError(f"{what}: {path} is corrupted (checksum mismatch): {fix}")
