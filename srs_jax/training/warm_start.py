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

The old run is read from disk only: its ``config.json``, its best Orbax checkpoint (restored
without a template, so no model is built for it) and its data (``config.data``, from the dataset
cache) for the old raw item ids. A table saved padded for a vocabulary-sharded mesh (zero rows
past the catalog) is cut back. If the old data no longer gives the catalog the checkpoint was
trained on, it stops with one line.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from srs_jax import data as data_lib
from srs_jax.config import load_specs
from srs_jax.training import run_files
from srs_jax.training import workdir as workdir_lib


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


def check_old_run(workdir: str) -> None:
    """Raises ``WarmStartError`` unless ``workdir`` is a run folder with a best checkpoint."""
    problem = workdir_lib.init_from_problem(workdir)
    if problem:
        raise WarmStartError(problem)


def read_best_params(workdir: str) -> tuple[dict, dict, int]:
    """``(params, meta, step)`` of the best checkpoint of ``workdir``, restored as saved (nested
    dicts of numpy arrays; no model or template needed)."""
    manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints", "best"),
                                    item_names=("state", "meta"))
    try:
        step = manager.latest_step()
        out = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(),
                                                             meta=ocp.args.JsonRestore()))
    finally:
        manager.close()
    return out.state["params"], dict(out.meta), int(step)


def warm_start(old_workdir: str, item_raw_ids, params, *, old_item_raw_ids=None
               ) -> tuple[object, dict]:
    """New parameters (same tree as ``params``) initialised from ``old_workdir``'s best checkpoint.

    Args:
      old_workdir: folder of the earlier run (its ``config.json`` and ``checkpoints/best``).
      item_raw_ids: the new dataset's ``item_raw_ids`` (``[V_new + 1]``, entry 0 = padding).
      params: the freshly initialised parameters of the new model (an ``nnx.State`` or any tree),
        unpadded (before any mesh padding of the item table).
      old_item_raw_ids: the old run's ``item_raw_ids`` when already at hand (else its data is
        prepared from its ``config.data``, normally a dataset-cache hit).

    Returns:
      ``(params, stats)``; stats: ``init_from`` (absolute path), ``checkpoint_step``,
      ``checkpoint_epoch``, ``items_kept`` / ``items_new`` / ``items_dropped``,
      ``params_copied``, ``item_tables`` (names of the remapped parameters).
    """
    old_workdir = os.path.abspath(old_workdir)
    check_old_run(old_workdir)
    old_config = load_specs(run_files.load_config_dict(old_workdir))
    family = old_config.model.name
    if old_item_raw_ids is None:
        old_item_raw_ids = data_lib.prepare_dataset(old_config.data).item_raw_ids
    old_raw = np.asarray(old_item_raw_ids)
    new_raw = np.asarray(item_raw_ids)
    old_v, new_v = len(old_raw) - 1, len(new_raw) - 1
    old_params, meta, step = read_best_params(old_workdir)

    old_leaves = dict(zip(param_names(old_params), jax.tree.leaves(old_params)))
    new_leaves, treedef = jax.tree.flatten(params)
    new_names = param_names(params)
    missing = [n for n in new_names if n not in old_leaves]
    if missing:
        raise WarmStartError(f"--init_from {old_workdir}: parameter {missing[0]} of the new model is "
                             f"not in the old run ({family}): warm start needs the same model "
                             "family and settings (config.model)")
    extra = sorted(set(old_leaves) - set(new_names))
    if extra:
        raise WarmStartError(f"--init_from {old_workdir}: parameter {extra[0]} of the old run "
                             f"({family}) is not in the new model: warm start needs the same model "
                             "family and settings (config.model)")

    mapping = match_items(old_raw, new_raw)  # new id -> old id or -1
    kept = mapping[1:] >= 0
    out, tables = [], []
    for name, fresh in zip(new_names, new_leaves):
        old = np.asarray(old_leaves[name])
        fresh_np = np.asarray(fresh)
        special = fresh_np.shape[0] - new_v if fresh_np.ndim else 0
        is_table = ("item" in name.lower() and fresh_np.ndim >= 1 and special >= 1
                    and old.ndim == fresh_np.ndim and old.shape[1:] == fresh_np.shape[1:])
        if is_table:
            used = old_v + special
            if old.shape[0] < used or np.any(old[used:] != 0):
                raise WarmStartError(
                    f"--init_from {old_workdir}: its data now gives {old_v} items but its checkpoint "
                    f"has {old.shape[0]} rows in {name}: the old run's data changed since it was "
                    "trained; restore it (config.data of that run) or its dataset cache")
            rows = np.array(fresh_np, copy=True)
            rows[0] = old[0]
            rows[1:new_v + 1][kept] = old[mapping[1:][kept]]
            rows[new_v + 1:] = old[old_v + 1:used]
            tables.append(name)
            out.append(jnp.asarray(rows, dtype=fresh_np.dtype))
            continue
        if old.shape != fresh_np.shape:
            raise WarmStartError(f"--init_from {old_workdir}: parameter {name} has shape "
                                 f"{tuple(old.shape)} in the old run but {tuple(fresh_np.shape)} in "
                                 "the new model: warm start needs the same model settings "
                                 "(config.model)")
        out.append(jnp.asarray(old, dtype=fresh_np.dtype))
    if not tables:
        raise WarmStartError(f"--init_from {old_workdir}: no item table found (a parameter named "
                             f"*item* with {new_v} + k rows in the new model)")
    n_kept = int(kept.sum())
    stats = {"init_from": old_workdir, "checkpoint": "best", "checkpoint_step": step,
             "checkpoint_epoch": int(meta.get("epoch", 0)),
             "items_kept": n_kept, "items_new": int(new_v - n_kept),
             "items_dropped": int(old_v - n_kept),
             "params_copied": len(out), "item_tables": tables}
    return jax.tree.unflatten(treedef, out), stats
