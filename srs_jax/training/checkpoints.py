"""Orbax checkpoints of a run: the latest (for ``--resume``) and the best by validation metric.

Layout under ``<workdir>/checkpoints``::

    latest/<step>/{state,meta}   state = {"params", "opt_state"} arrays, meta = JSON loop state
    best/<step>/{state,meta}

Orbax writes every checkpoint to a temporary directory and renames it when complete, and removes
the previous one only after that, so a failed write (full disk, ...) leaves the previous
checkpoint restorable. Writes are synchronous: a failure surfaces here, as ``CheckpointWriteError``.

After a write, ``<step>/checksums.json`` records the size and CRC-32 of each of its files
(``run_files.write_checksums``); a restore verifies them first and refuses a truncated or altered
checkpoint with ``CheckpointReadError`` naming the file. With several processes every process
saves and restores (Orbax writes each process's shards, process 0 the metadata and the rename);
process 0 writes the checksums once all have finished, and all wait for it; every process verifies
before it restores. Any other restore failure (a checkpoint
of another model shape, a foreign folder) is a ``CheckpointReadError`` too, one line.
"""

from __future__ import annotations

import os
import re
from typing import Any

import jax
import orbax.checkpoint as ocp

from srs_jax import parallel
from srs_jax.training import run_files


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written; the previous one is still valid."""


class CheckpointReadError(ValueError):
    """A checkpoint is corrupted, truncated or does not fit the model (message names the file)."""


READ_FIX = ("the checkpoint cannot be used: restore the run folder from a copy, or start a new run "
            "in another --workdir")


def step_directory(manager_directory: str, step: int) -> str:
    return os.path.join(str(manager_directory), str(int(step)))


def verify_step(directory: str) -> None:
    """Checks a checkpoint step folder against its ``checksums.json`` (if it has one)."""
    if run_files.has_checksums(directory):
        run_files.verify_checksums(directory, what=f"checkpoint {directory}", fix=READ_FIX)


def _manager(directory: str) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True,
                                           enable_async_checkpointing=False)
    return ocp.CheckpointManager(os.path.abspath(directory), options=options,
                                 item_names=("state", "meta"))


def has_checkpoint(workdir: str) -> bool:
    """Whether ``workdir`` holds a finished latest checkpoint (no directories are created)."""
    latest = os.path.join(os.path.abspath(workdir), "checkpoints", "latest")
    return os.path.isdir(latest) and any(name.isdigit() for name in os.listdir(latest))


class RunCheckpoints:
    """The two checkpoint slots of a run directory (``latest`` and ``best``)."""

    def __init__(self, workdir: str):
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        self._latest = _manager(os.path.join(self.directory, "latest"))
        self._best = _manager(os.path.join(self.directory, "best"))

    def _save(self, manager, step: int, tree: dict, meta: dict) -> None:
        try:
            manager.save(int(step), args=ocp.args.Composite(
                state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)), force=True)
            manager.wait_until_finished()
            parallel.barrier("srs_jax: checkpoint written")  # every process's shards are on disk
            if parallel.is_primary():
                run_files.write_checksums(step_directory(manager.directory, step))
            # Nobody moves on (e.g. to the next save, which deletes this step) before the checksums.
            parallel.barrier("srs_jax: checksums written")
        except Exception as e:  # orbax wraps OSError in several exception types
            lost = _innermost(e)
            if isinstance(lost, jax.errors.JaxRuntimeError) and jax.process_count() > 1:
                raise lost from e  # a collective with a dead process, not the disk: the loop says so
            where = manager.directory
            reason = _root_cause(e)
            previous = manager.latest_step()
            kept = (f"the previous checkpoint is still valid (step {previous})" if previous is not None
                    and previous != int(step) else "no earlier checkpoint exists in this slot")
            raise CheckpointWriteError(
                f"could not write checkpoint {step} under {where} ({reason}); {kept}: free disk "
                f"space or fix permissions, then rerun with --resume") from e

    def save_latest(self, step: int, tree: dict, meta: dict) -> None:
        self._save(self._latest, step, tree, meta)

    def save_best(self, step: int, tree: dict, meta: dict) -> None:
        self._save(self._best, step, tree, meta)

    def latest_step(self) -> int | None:
        return self._latest.latest_step()

    def best_step(self) -> int | None:
        return self._best.latest_step()

    @staticmethod
    def _restore(manager, target: dict) -> tuple[dict, dict]:
        step = manager.latest_step()
        if step is None:
            raise FileNotFoundError(
                f"no checkpoint in {manager.directory}: train first (python -m experiments.train)")
        directory = step_directory(manager.directory, step)
        try:
            verify_step(directory)
        except run_files.RunFileError as e:
            raise CheckpointReadError(str(e)) from e
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        try:
            out = manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        except Exception as e:  # noqa: BLE001 - orbax raises many types for the same problems
            first = " ".join(str(e).split()).split(". ")[0][:240] or type(e).__name__
            raise CheckpointReadError(
                f"cannot restore checkpoint {directory} ({type(e).__name__}: {first}): it does not "
                f"fit this model or is damaged; {READ_FIX}") from e
        return out.state, dict(out.meta)

    def restore_latest(self, target: dict) -> tuple[dict, dict]:
        """``target``: a tree with the structure, shapes and dtypes to restore into."""
        return self._restore(self._latest, target)

    def restore_best(self, target: dict) -> tuple[dict, dict]:
        return self._restore(self._best, target)

    def close(self) -> None:
        self._latest.close()
        self._best.close()


def _innermost(error: BaseException) -> BaseException:
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    return error


def _root_cause(error: BaseException) -> str:
    """``Type: message`` of the innermost cause (Orbax wraps the OSError of a full disk)."""
    error = _innermost(error)
    if isinstance(error, OSError) and error.strerror:
        return f"{error.strerror}" + (f": {error.filename}" if error.filename else "")
    text = " ".join(str(error).split())
    code = re.search(r"os_error_code='?(\d+)", text)  # TensorStore's report of a failed write
    if code:
        return os.strerror(int(code.group(1)))
    return f"{type(error).__name__}: {text[:200]}" if text else type(error).__name__


def checkpoint_tree(state, opt_state) -> dict[str, Any]:
    """What is saved: trainable parameters and optimiser state (RNG keys are derived from
    ``(seed, step)``, data order from ``(seed, epoch)``; both live in ``meta``)."""
    return {"params": state.params, "opt_state": opt_state}
