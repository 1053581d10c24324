"""Warm start: a new run's parameters taken over from an older run, items matched by raw id.

``warm_start(old_workdir, item_raw_ids, params) -> (params, stats)`` is a pure function of the
old run's best checkpoint (on disk), the new dataset's raw item ids and the freshly initialised
parameters of the new model; it writes nothing.

* Item tables (parameters whose name contains ``item`` and whose leading dimension is the catalog
  size plus the same number of special rows in both runs: row 0 = padding, rows past the catalog
  = e.g. BERT4Rec's ``[mask]``): an item present in both catalogs (same raw id, compared as
  integers when both id arrays are integers, else as strings) keeps its learned row, moved to its
  new dense id; a new item keeps the freshly initialised row of the new model, so it starts from
  the same distribution as in a cold start (a zero row would tie every new item at score 0 and
  give its first gradients no direction of its own); items only in the old catalog are dropped.
  Padding and special rows are taken from the old run.
* Every other parameter is copied when the new model has it with the same shape. A parameter
  missing on either side or with another shape (another model family or size) raises
  ``WarmStartError`` naming it, before anything is changed.

Optimizer state is not taken over: the caller initialises it fresh for the new parameters.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from srs_jax.training.saved_run import load_run


class WarmStartError(ValueError):
    """The old run cannot initialise the new model (one-line message naming the parameter)."""


def param_names(params) -> list[str]:
    """``a/b/c`` names of the leaves of ``params``, in ``jax.tree.leaves`` order."""
    names = []
    for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]:
        parts = []
        for p in path:
            key = getattr(p, "key", getattr(p, "idx", getattr(p, "name", None)))
            if key is not None and key != "value":
                parts.append(str(key))
        names.append("/".join(parts))
    return names


def match_items(old_raw_ids, new_raw_ids) -> np.ndarray:
    """``int64[V_new + 1]``: for each new encoded id, the old encoded id of the same raw id, or -1.

    Both arrays are ``PreparedDataset.item_raw_ids`` (entry 0 = padding placeholder, never matched).
    """
    old = np.asarray(old_raw_ids)[1:]
    new = np.asarray(new_raw_ids)[1:]
    if not (np.issubdtype(old.dtype, np.integer) and np.issubdtype(new.dtype, np.integer)):
        old, new = old.astype(str), new.astype(str)
    order = np.argsort(old, kind="stable")
    pos = np.searchsorted(old[order], new)
    pos = np.minimum(pos, max(len(old) - 1, 0))
    found = (old[order][pos] == new) if len(old) else np.zeros(len(new), bool)
    out = np.full(len(new) + 1, -1, np.int64)
    out[1:] = np.where(found, order[pos] + 1, -1)
    return out


def _best_step(workdir: str) -> int | None:
    best = os.path.join(workdir, "checkpoints", "best")
    steps = [int(n) for n in os.listdir(best) if n.isdigit()] if os.path.isdir(best) else []
    return max(steps) if steps else None


def check_old_run(workdir: str) -> None:
    """Raises ``WarmStartError`` unless ``workdir`` is a run folder with a best checkpoint."""
    if not os.path.isfile(os.path.join(workdir, "config.json")):
        raise WarmStartError(f"--init_from {workdir} is not a run folder (no config.json): pass the "
                             "--workdir of an earlier python -m experiments.train run")
    if _best_step(workdir) is None:
        raise WarmStartError(f"--init_from {workdir} has no best checkpoint yet: train it for at "
                             "least one epoch first")


def warm_start(old_workdir: str, item_raw_ids, params, *, old_run=None) -> tuple[object, dict]:
    """New parameters (same tree as ``params``) initialised from ``old_workdir``'s best checkpoint.

    Args:
      old_workdir: folder of the earlier run (its ``config.json`` and ``checkpoints/best``).
      item_raw_ids: the new dataset's ``item_raw_ids`` (``[V_new + 1]``, entry 0 = padding).
      params: the freshly initialised parameters of the new model (an ``nnx.State`` or any tree).
      old_run: the already loaded ``SavedRun`` of ``old_workdir`` (else loaded here).

    Returns:
      ``(params, stats)``; stats: ``init_from`` (absolute path), ``checkpoint_step``,
      ``checkpoint_epoch``, ``items_kept`` / ``items_new`` / ``items_dropped``,
      ``params_copied``, ``item_tables`` (names of the remapped parameters).
    """
    old_workdir = os.path.abspath(old_workdir)
    check_old_run(old_workdir)
    run = old_run if old_run is not None else load_run(old_workdir, which="best")
    old_raw = np.asarray(run.dataset.item_raw_ids)
    new_raw = np.asarray(item_raw_ids)
    old_v, new_v = len(old_raw) - 1, len(new_raw) - 1

    old_names = param_names(run.state.params)
    old_leaves = dict(zip(old_names, jax.tree.leaves(run.state.params)))
    new_leaves, treedef = jax.tree.flatten(params)
    new_names = param_names(params)
    missing = [n for n in new_names if n not in old_leaves]
    if missing:
        raise WarmStartError(f"--init_from {old_workdir}: parameter {missing[0]} of the new model is "
                             f"not in the old run ({run.config.model.name}): warm start needs the "
                             "same model family and settings (config.model)")
    extra = sorted(set(old_names) - set(new_names))
    if extra:
        raise WarmStartError(f"--init_from {old_workdir}: parameter {extra[0]} of the old run "
                             f"({run.config.model.name}) is not in the new model: warm start needs "
                             "the same model family and settings (config.model)")

    mapping = match_items(old_raw, new_raw)  # new id -> old id or -1
    kept = mapping[1:] >= 0
    out, tables = [], []
    for name, fresh in zip(new_names, new_leaves):
        old = np.asarray(old_leaves[name])
        fresh_shape = tuple(np.shape(fresh))
        special = old.shape[0] - old_v if old.ndim else 0
        is_table = ("item" in name.lower() and old.ndim >= 1 and special >= 1
                    and len(fresh_shape) == old.ndim and fresh_shape[0] - new_v == special
                    and fresh_shape[1:] == old.shape[1:])
        if is_table:
            rows = np.array(fresh, dtype=np.asarray(fresh).dtype, copy=True)
            rows[0] = old[0]
            rows[1:new_v + 1][kept] = old[mapping[1:][kept]]
            rows[new_v + 1:] = old[old_v + 1:]
            tables.append(name)
            out.append(jnp.asarray(rows, dtype=jnp.asarray(fresh).dtype))
            continue
        if old.shape != fresh_shape:
            raise WarmStartError(f"--init_from {old_workdir}: parameter {name} has shape "
                                 f"{tuple(old.shape)} in the old run but {fresh_shape} in the new "
                                 "model: warm start needs the same model settings (config.model)")
        out.append(jnp.asarray(old, dtype=jnp.asarray(fresh).dtype))
    if not tables:
        raise WarmStartError(f"--init_from {old_workdir}: no item table found (a parameter named "
                             f"*item* with {old_v} + k rows there and {new_v} + k rows here)")
    n_kept = int(kept.sum())
    stats = {"init_from": old_workdir, "checkpoint": "best",
             "checkpoint_step": _best_step(old_workdir),
             "checkpoint_epoch": int(run.checkpoint_epoch),
             "items_kept": n_kept, "items_new": int(new_v - n_kept),
             "items_dropped": int(old_v - n_kept),
             "params_copied": len(out), "item_tables": tables}
    return jax.tree.unflatten(treedef, out), stats
