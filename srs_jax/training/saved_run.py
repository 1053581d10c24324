"""Loading a finished (or interrupted) run: its config, data and best parameters."""

from __future__ import annotations

import dataclasses
import os

from srs_jax import data as data_lib
from srs_jax import parallel
from srs_jax.config import RunSpec, load_specs
from srs_jax.training import checkpoints as ckpt_lib
from srs_jax.training import run_files
from srs_jax.training import steps as steps_lib
from srs_jax.training.state import build_state


@dataclasses.dataclass
class SavedRun:
    workdir: str
    config: RunSpec
    dataset: object  # srs_jax.data.PreparedDataset
    graphdef: object
    state: steps_lib.TrainState
    checkpoint_epoch: int


def load_run(workdir: str, *, which: str = "best") -> SavedRun:
    """Rebuilds the model of ``workdir`` with its ``best`` (or ``latest``) parameters."""
    if which not in ("best", "latest"):
        raise ValueError(f"which={which!r}: use 'best' or 'latest'")
    workdir = os.path.abspath(workdir)
    config = load_specs(run_files.load_config(workdir))
    dataset = data_lib.prepare_dataset(config.data)
    graphdef, state = build_state(config.model, dataset.n_items, seed=config.seed)
    optimizer = steps_lib.make_optimizer(config.train, 1)
    # A run trained with a vocab-sharded table saved it padded; restore padded, then cut back.
    target = parallel.padded_like_training(
        config.mesh, ckpt_lib.checkpoint_tree(state, optimizer.init(state.params)))
    ckpts = ckpt_lib.RunCheckpoints(workdir)
    try:
        restore = ckpts.restore_best if which == "best" else ckpts.restore_latest
        tree, meta = restore(target)
    finally:
        ckpts.close()
    params = parallel.unpad_item_table(tree["params"], parallel.table_rows(state.params))
    return SavedRun(workdir, config, dataset, graphdef, state._replace(params=params),
                    int(meta["epoch"]))
