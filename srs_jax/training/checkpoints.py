"""Orbax checkpoints of a run: the latest (for ``--resume``) and the best by validation metric.

Layout under ``<workdir>/checkpoints``::

    latest/<step>/{state,meta}   state = {"params", "opt_state"} arrays, meta = JSON loop state
    best/<step>/{state,meta}

Orbax writes every checkpoint to a temporary directory and renames it when complete, and removes
the previous one only after that, so a failed write (full disk, ...) leaves the previous
checkpoint restorable. Writes are synchronous: a failure surfaces here, as ``CheckpointWriteError``.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written; the previous one is still valid."""


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
        except Exception as e:  # orbax wraps OSError in several exception types
            where = manager.directory
            raise CheckpointWriteError(
                f"could not write checkpoint {step} under {where} ({type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''}); the previous checkpoint is still "
                f"valid: free space or fix permissions, then rerun with --resume") from e

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
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        out = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        return out.state, dict(out.meta)

    def restore_latest(self, target: dict) -> tuple[dict, dict]:
        """``target``: a tree with the structure, shapes and dtypes to restore into."""
        return self._restore(self._latest, target)

    def restore_best(self, target: dict) -> tuple[dict, dict]:
        return self._restore(self._best, target)

    def close(self) -> None:
        self._latest.close()
        self._best.close()


def checkpoint_tree(state, opt_state) -> dict[str, Any]:
    """What is saved: trainable parameters and optimiser state (RNG keys are derived from
    ``(seed, step)``, data order from ``(seed, epoch)``; both live in ``meta``)."""
    return {"params": state.params, "opt_state": opt_state}
