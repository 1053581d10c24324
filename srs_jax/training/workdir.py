"""The run folder as a whole: path checks, the lock, and what ``--resume`` may change.

``open_run(workdir, config, resume)`` is used as a context manager around ``loop.train``:

1. the path is checked (not a file, creatable, writable) and the folder created;
2. ``<workdir>/.lock`` is locked (``flock``, exclusive, non-blocking): a second training on the same
   folder stops with one line. The OS drops the lock when the process ends, however it ends
   (``kill -9`` included), so there is never a stale lock to delete;
3. a fresh run refuses a folder that already holds a run; ``--resume`` compares the new config with
   ``config.json`` and stops, before anything is written, when a field that changes what the
   checkpoint means differs (``frozen_changes``); the fields that may change (``MAY_CHANGE``) are
   appended to ``resumes.jsonl`` and returned for ``results.json``; the checkpoints' checksums
   are verified.

With several processes on a shared file system only process 0 (``primary``) locks the folder and
writes ``resumes.jsonl``; the others make the same read-only checks, so a refused resume stops
every process with the same line.

Nothing here imports JAX: every check runs in the first second of a command.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import fnmatch
import json
import os
import time

from srs_jax.config import load_specs
from srs_jax.config.names import SAMPLED_LOSSES
from srs_jax.training import run_files

LOCK_FILE = ".lock"
# Fields that may differ on --resume (glob patterns over dotted config keys); every other field is
# part of what the checkpoint means (model shape, catalog and data, loss, optimiser, batches).
MAY_CHANGE = (
    "workdir",
    "train.max_epochs", "train.max_train_seconds", "train.patience", "train.log_every",
    "train.prefetch", "train.eval_batch_size", "train.checkpoint_every_steps",
    "eval.ks", "eval.metrics", "eval.coverage_mode", "eval.user_chunk", "eval.item_chunk",
    "eval.popularity_baseline",
    "model.compute_dtype", "loss.impl",
    "data.cache_dir", "data.use_cache", "data.source_url",
    "mesh.enabled", "mesh.data", "mesh.lookup", "mesh.coordinator_address", "mesh.num_processes",
    "mesh.process_id", "mesh.init_timeout_s", "mesh.heartbeat_timeout_s",
)
NOT_RECORDED = ("workdir",)


class WorkdirError(ValueError):
    """The run folder cannot be used (the message names the path and what to do)."""


# ---------------------------------------------------------------------------- paths

def check_path(workdir: str) -> str:
    """The absolute path of ``workdir`` after checking it is (or can become) a writable folder."""
    if not workdir:
        raise WorkdirError("no run folder: pass --workdir DIR (or set config.workdir)")
    path = os.path.abspath(os.path.expanduser(workdir))
    if os.path.exists(path) and not os.path.isdir(path):
        raise WorkdirError(f"--workdir {path} is a file, not a folder: pass a folder path "
                           "(it is created when missing)")
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise WorkdirError(f"--workdir {path} cannot be created: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "is not writable" if existing == path else f"cannot be created in {existing}"
        raise WorkdirError(f"--workdir {path} {what}: choose a folder you can write, or fix its "
                           "permissions")
    return path


def describe_os_error(error: OSError, what: str) -> str:
    """One line for a failed write: the path, the reason and the fix."""
    where = error.filename or what
    if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return (f"{where}: {error.strerror} while writing {what}: free disk space (or choose "
                "another --workdir), then rerun with --resume")
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{where}: {error.strerror}: choose a --workdir you can write, or fix its permissions"
    return (f"{where}: {error.strerror} while writing {what}: choose a --workdir on a writable "
            "file system")


# ---------------------------------------------------------------------------- lock

class RunLock:
    """``flock`` on ``<workdir>/.lock``: exclusive for training, shared for readers (evaluate)."""

    def __init__(self, workdir: str, *, shared: bool = False):
        self.path = os.path.join(workdir, LOCK_FILE)
        self.shared = shared
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            if not self.shared:
                raise WorkdirError(describe_os_error(e, "the run folder's lock")) from e
            return self  # a read-only folder: readers go on without a lock
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            folder = os.path.dirname(self.path)
            raise WorkdirError(
                f"{folder} is in use by another process (a training{'' if self.shared else ' or an evaluation'} "
                f"holds {self.path}): wait for it to end, or choose another --workdir") from None
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


# ---------------------------------------------------------------------------- checkpoints

def checkpoint_step_dirs(workdir: str, slot: str = "latest") -> list[str]:
    """Finished checkpoint folders ``checkpoints/<slot>/<step>``, oldest first."""
    base = os.path.join(workdir, "checkpoints", slot)
    if not os.path.isdir(base):
        return []
    steps = sorted(int(n) for n in os.listdir(base) if n.isdigit())
    return [os.path.join(base, str(s)) for s in steps]


def init_from_problem(path: str) -> str | None:
    """Why ``--init_from path`` cannot start a run (one line), or None: it must be a run folder
    (``config.json``) with a best checkpoint."""
    path = os.path.abspath(path)
    if not os.path.isfile(os.path.join(path, run_files.CONFIG_FILE)):
        return (f"--init_from {path} is not a run folder (no config.json): pass the --workdir of an "
                "earlier python -m experiments.train run")
    if not checkpoint_step_dirs(path, "best"):
        return (f"--init_from {path} has no best checkpoint yet: train it for at least one epoch "
                "first")
    return None


def latest_checkpoint(workdir: str) -> dict | None:
    """``{"directory", "step", "epoch", "step_in_epoch"}`` of the latest checkpoint, or None."""
    dirs = checkpoint_step_dirs(workdir)
    if not dirs:
        return None
    out = {"directory": dirs[-1], "step": int(os.path.basename(dirs[-1])), "epoch": None,
           "step_in_epoch": None}
    try:
        with open(os.path.join(dirs[-1], "meta", "metadata")) as f:
            meta = json.load(f)
        out.update(epoch=meta.get("epoch"), step_in_epoch=meta.get("step_in_epoch"))
    except (OSError, ValueError, AttributeError):
        pass
    return out


def verify_checkpoints(workdir: str) -> None:
    """Verifies the checksums of the latest and best checkpoints (``run_files.ChecksumError``)."""
    fix = ("the checkpoint cannot be used: restore the run folder from a copy, or start a new run "
           "in another --workdir")
    for slot in ("latest", "best"):
        dirs = checkpoint_step_dirs(workdir, slot)
        if dirs and run_files.has_checksums(dirs[-1]):
            run_files.verify_checksums(dirs[-1], what=f"{slot} checkpoint", fix=fix)


def resume_hint(workdir: str, command: str = "python -m experiments.train") -> str:
    """What to run after an interruption: which checkpoint ``--resume`` continues from."""
    ck = latest_checkpoint(workdir)
    if ck is None:
        return f"no checkpoint was written in {workdir} yet; rerun the same command to start again"
    where = f"epoch {ck['epoch']}" if ck["epoch"] is not None else f"step {ck['step']}"
    if ck.get("step_in_epoch"):
        where += f" + {ck['step_in_epoch']} steps"
    return (f"the latest checkpoint ({where}, global step {ck['step']}) is in {ck['directory']}; "
            f"continue with {command} ... --workdir {workdir} --resume")


# ---------------------------------------------------------------------------- resume changes

def flatten(tree, prefix: str = "") -> dict:
    """Dotted keys -> JSON values of a nested dict."""
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_as_dict(config) -> dict:
    """A ConfigDict, dict or spec as the JSON-ready spec dict ``config.json`` holds
    (``load_specs(config).to_dict()``; compute_dtype 'auto' stays unresolved, so no JAX)."""
    return json.loads(json.dumps(load_specs(config, resolve_auto=False).to_dict(), default=str))


def may_change(key: str) -> bool:
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in MAY_CHANGE)


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or a == b and type(a) is type(b)
    return a == b


def config_changes(saved: dict, new: dict) -> tuple[dict, dict]:
    """``(frozen, allowed)``: the differing fields ``{key: (saved, new)}`` split by ``MAY_CHANGE``.
    A field present on one side only counts when its value is not None."""
    old, cur = flatten(saved), flatten(new)
    frozen, allowed = {}, {}
    for key in sorted(set(old) | set(cur)):
        a, b = old.get(key), cur.get(key)
        if key not in old and b is None or key not in cur and a is None or _same(a, b):
            continue
        if b == "auto" and may_change(key):
            continue  # resolved when the run starts (e.g. model.compute_dtype)
        (allowed if may_change(key) else frozen)[key] = (a, b)
    return frozen, allowed


def _short(value) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def format_changes(changes: dict) -> str:
    return ", ".join(f"{k} {_short(a)} -> {_short(b)}" for k, (a, b) in changes.items())


# ---------------------------------------------------------------------------- config vs data

def check_against_data(config, n_items: int) -> None:
    """Settings that only the prepared catalog can check, before training starts: ``ValueError``
    naming the field when ``loss.num_negatives`` (sampled losses) is not below the catalog size or
    an ``eval.ks`` cutoff exceeds it. Reads ``config`` by attribute only (ConfigDict or spec)."""
    loss_type, nn = str(config.loss.type), int(config.loss.num_negatives or 0)
    if loss_type in SAMPLED_LOSSES and nn >= n_items:
        raise ValueError(f"config.loss.num_negatives={nn} is not below the catalog size ({n_items} "
                         f"items) of config.data.name={config.data.name!r}: use at most "
                         f"{max(n_items - 1, 1)}")
    too_big = [int(k) for k in config.eval.ks if int(k) > n_items]
    if too_big:
        keep = [int(k) for k in config.eval.ks if int(k) <= n_items]
        raise ValueError(f"config.eval.ks has cutoffs {too_big} above the catalog size ({n_items} "
                         f"items): drop them, e.g. --config.eval.ks={','.join(map(str, keep or [1]))}")


# ---------------------------------------------------------------------------- the whole

@dataclasses.dataclass
class RunFolder:
    """An open (locked, checked) run folder; see ``open_run``."""

    path: str
    resume: bool
    created: bool
    lock: RunLock
    changes: dict  # fields changed on --resume (allowed ones): {key: (saved, new)}

    def record_in_results(self) -> None:
        """Adds the resume history (``resumes.jsonl``) to ``results.json`` if both exist."""
        results_path = os.path.join(self.path, run_files.RESULTS_FILE)
        resumes = run_files.read_jsonl(os.path.join(self.path, run_files.RESUMES_FILE),
                                       what="resume log")
        if resumes and os.path.isfile(results_path):
            results = run_files.read_json(results_path, what="the run's results")
            if results.get("resumes") != resumes:
                results["resumes"] = resumes
                run_files.write_json(results_path, results)

    def close(self) -> None:
        self.lock.release()
        if self.created:
            try:  # a command that failed before writing anything leaves no empty folder
                leftovers = set(os.listdir(self.path)) - {LOCK_FILE}
                if not leftovers:
                    os.remove(os.path.join(self.path, LOCK_FILE))
                    os.rmdir(self.path)
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def holds_run(path: str) -> bool:
    return bool(checkpoint_step_dirs(path)) or os.path.isfile(os.path.join(path, run_files.RESULTS_FILE))


def open_run(workdir: str, config, resume: bool, primary: bool = True) -> RunFolder:
    """Checks, creates and locks ``workdir`` for training ``config`` (module docstring); a process
    other than process 0 (``primary=False``) only checks."""
    path = check_path(workdir)
    created = not os.path.exists(path)
    try:
        if primary:  # the others write only after joining process 0, which created it
            os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise WorkdirError(describe_os_error(e, f"--workdir {path}")) from e
    lock = RunLock(path).acquire() if primary else RunLock(path)
    folder = RunFolder(path, resume, created and primary, lock, {})
    try:
        if not resume and holds_run(path):
            raise WorkdirError(f"{path} already holds a run: pass --resume to continue it, or "
                               "choose another --workdir")
        if resume and os.path.exists(os.path.join(path, run_files.CONFIG_FILE)):
            saved = config_as_dict(run_files.load_config_dict(path))
            frozen, allowed = config_changes(saved, config_as_dict(config))
            if frozen:
                raise WorkdirError(
                    f"--resume in {path} with a config that changes what its checkpoint means "
                    f"({format_changes(frozen)}): nothing was written; resume with the same values "
                    f"(see {os.path.join(path, run_files.CONFIG_FILE)}) or train into another "
                    "--workdir")
            verify_checkpoints(path)
            recorded = {k: v for k, v in allowed.items() if k not in NOT_RECORDED}
            if recorded:
                folder.changes = recorded
                if not primary:
                    return folder
                rows = run_files.read_jsonl(os.path.join(path, run_files.RESUMES_FILE),
                                            what="resume log")
                ck = latest_checkpoint(path)
                rows.append({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                             "from_step": ck["step"] if ck else 0,
                             "changed": {k: list(v) for k, v in recorded.items()}})
                run_files.write_jsonl(os.path.join(path, run_files.RESUMES_FILE), rows)
    except BaseException:
        folder.close()
        raise
    return folder
