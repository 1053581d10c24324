"""On-disk cache of prepared datasets, written atomically.

Layout: ``<cache_dir>/<name>-<fingerprint>/`` holding one ``.npy`` per array (no pickle) and
``meta.json`` (fingerprint, sizes, stats, array names). The fingerprint hashes the raw file's
(absolute path, size, mtime) -- or, for ``synthetic``, the generator config -- together with
every preprocessing field of the data config and ``CACHE_VERSION``. A directory is built under a
temporary name unique to the writer (host, pid, random suffix) and renamed into place, so a crash
mid-write leaves no directory under the final name, and processes that build the same cache at
once (several hosts on a shared file system) never write into each other's files: the first
complete copy is kept, later ones are dropped. A final directory that fails to load (e.g. edited
by hand) is rebuilt.

``meta.json`` records the size and CRC-32 of every array file; ``load`` verifies them, so a file
altered in place (even without changing its size) is reported by name and the cache rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import uuid
import zlib
from pathlib import Path

import numpy as np

from srs_jax.data import sources, synthetic
from srs_jax.data.containers import EvalSplit, PreparedDataset, Sequences

log = logging.getLogger(__name__)

# Bump whenever filtering, splitting or encoding change the prepared data: old caches then miss.
CACHE_VERSION = 2
# Fields that do not change the prepared data.
_NOT_HASHED = ("cache_dir", "use_cache", "source_url", "path", "synthetic")
# Fields added after caches were written, with the value that means "as before": hashed only when
# set otherwise, so the caches of configs that do not use them keep their fingerprint.
_HASHED_WHEN_SET = {"time_until": None}
_SYNTHETIC_HASHED_WHEN_SET = {"growth": 0.0}


def _set_fields(values: dict, when_set: dict) -> dict:
    return {k: v for k, v in values.items() if k not in when_set or v != when_set[k]}


def fingerprint(cfg) -> str:
    """Hex digest identifying the prepared data of ``cfg`` (module docstring)."""
    settings = _set_fields({k: v for k, v in cfg.to_dict().items() if k not in _NOT_HASHED},
                           _HASHED_WHEN_SET)
    if cfg.format == "synthetic":
        source = {"synthetic": _set_fields(cfg.synthetic.to_dict(), _SYNTHETIC_HASHED_WHEN_SET),
                  "generator": synthetic.GENERATOR_VERSION}
    else:
        path = sources.raw_path(cfg).resolve()  # the file actually read (it may be the .gz variant)
        st = path.stat()
        source = {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    blob = json.dumps({"version": CACHE_VERSION, "source": source, "settings": settings},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def cache_path(cfg) -> Path:
    """The cache directory of ``cfg`` (it may not exist yet)."""
    return Path(cfg.cache_dir).expanduser() / f"{cfg.name}-{fingerprint(cfg)}"


def _to_arrays(ds: PreparedDataset) -> dict[str, np.ndarray]:
    arrays = {"item_raw_ids": ds.item_raw_ids, "user_raw_ids": ds.user_raw_ids,
              "item_counts": ds.item_counts}
    for name, seqs in (("train", ds.train), ("val.inputs", ds.val.inputs),
                       ("test.inputs", ds.test.inputs), ("test_period", ds.test_period)):
        for field in ("offsets", "items", "users"):
            arrays[f"{name}.{field}"] = getattr(seqs, field)
    arrays["val.targets"] = ds.val.targets
    arrays["test.targets"] = ds.test.targets
    return arrays


def _from_arrays(a: dict[str, np.ndarray], meta: dict) -> PreparedDataset:
    def seqs(name):
        return Sequences(a[f"{name}.offsets"], a[f"{name}.items"], a[f"{name}.users"])

    val, test = seqs("val.inputs"), seqs("test.inputs")
    return PreparedDataset(
        n_items=meta["n_items"], n_users=meta["n_users"], item_raw_ids=a["item_raw_ids"],
        user_raw_ids=a["user_raw_ids"], train=seqs("train"),
        val=EvalSplit(val, a["val.targets"], val.users),
        test=EvalSplit(test, a["test.targets"], test.users),
        test_period=seqs("test_period"), item_counts=a["item_counts"], stats=meta["stats"])


def _host() -> str:
    return socket.gethostname().replace("-", "_") or "host"


def _remove_stale_temporaries(path: Path) -> None:
    """Deletes ``.<name>.tmp-<host>-<pid>-*`` directories left by killed writers of this host
    (pid not running); another host's pids cannot be checked from here, so its are left alone."""
    for tmp in path.parent.glob(f".{path.name}.tmp-*"):
        try:
            parts = tmp.name.rsplit(".tmp-", 1)[1].rsplit("-", 2)
            host, pid = (_host(), parts[0]) if len(parts) == 2 else parts[:2]  # 2: no host part
            if host != _host():
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except (ValueError, IndexError, PermissionError):
            continue  # not ours, or another user's live process


def save(ds: PreparedDataset, path: Path) -> None:
    """Writes ``ds`` to ``path`` atomically (temporary directory, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    tmp = path.parent / f".{path.name}.tmp-{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        arrays = _to_arrays(ds)
        for name, array in arrays.items():
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)
        checksums = {name: file_checksum(tmp / f"{name}.npy") for name in arrays}
        meta = dict(version=CACHE_VERSION, fingerprint=path.name, n_items=int(ds.n_items),
                    n_users=int(ds.n_users), stats=ds.stats, arrays=sorted(arrays),
                    checksums=checksums)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        try:
            os.rename(tmp, path)  # fails when a (non-empty) copy is already there
        except OSError:
            if load(path) is not None:  # a concurrent writer finished first: keep its copy
                shutil.rmtree(tmp, ignore_errors=True)
            else:  # a broken copy: replace it, never leave it half-moved
                trash = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
                os.rename(path, trash)
                os.rename(tmp, path)
                shutil.rmtree(trash, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("cached prepared dataset in %s", path)


def load(path: Path) -> PreparedDataset | None:
    """The dataset cached at ``path``, or None when absent or unreadable (it is then rebuilt)."""
    path = Path(path)
    meta_file = path / "meta.json"
    if not meta_file.is_file():
        return None
    try:
        meta = json.loads(meta_file.read_text())
        if meta.get("version") != CACHE_VERSION or meta.get("fingerprint") != path.name:
            return None
        for name in meta["arrays"]:
            file = path / f"{name}.npy"
            if file_checksum(file) != meta["checksums"][name]:
                log.warning("cache file %s is corrupted (checksum mismatch): rebuilding the "
                            "prepared dataset", file)
                return None
        arrays = {name: np.load(path / f"{name}.npy", allow_pickle=False)
                  for name in meta["arrays"]}
        return _from_arrays(arrays, meta)
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("ignoring unreadable cache %s (%s); rebuilding", path, err)
        return None


def file_checksum(path: Path) -> dict:
    """``{"size", "crc32"}`` of a file, read in 16 MiB blocks."""
    crc, size = 0, 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            crc = zlib.crc32(block, crc)
            size += len(block)
    return {"size": size, "crc32": crc}
