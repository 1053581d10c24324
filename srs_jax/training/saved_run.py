"""Loading a finished (or interrupted) run: its config, data and best parameters."""

from __future__ import annotations

import dataclasses
import os

import ml_collections

from srs_jax import data as data_lib
from srs_jax.training import checkpoints as ckpt_lib
from srs_jax.training import run_files
from srs_jax.training import steps as steps_lib


@dataclasses.dataclass
class SavedRun:
    workdir: str
    config: ml_collections.ConfigDict
    dataset: object  # srs_jax.data.PreparedDataset
    graphdef: object
    state: steps_lib.TrainState
    checkpoint_epoch: int


def load_run(workdir: str, *, which: str = "best") -> SavedRun:
    """Rebuilds the model of ``workdir`` with its ``best`` (or ``latest``) parameters."""
    from srs_jax.training.loop import build_state  # loop imports this module's siblings

    if which not in ("best", "latest"):
        raise ValueError(f"which={which!r}: use 'best' or 'latest'")
    workdir = os.path.abspath(workdir)
    config = run_files.load_config(workdir)
    dataset = data_lib.prepare_dataset(config.data)
    graphdef, state = build_state(config, dataset.n_items)
    optimizer = steps_lib.make_optimizer(config.train, 1)
    from srs_jax import distributed  # late import: distributed imports the trainer's modules

    # A run trained with a vocab-sharded table saved it padded; restore padded, then cut back.
    target = distributed.padded_like_training(
        config, ckpt_lib.checkpoint_tree(state, optimizer.init(state.params)))
    ckpts = ckpt_lib.RunCheckpoints(workdir)
    try:
        restore = ckpts.restore_best if which == "best" else ckpts.restore_latest
        tree, meta = restore(target)
    finally:
        ckpts.close()
    params = distributed.unpad_item_table(tree["params"], distributed.table_rows(state))
    return SavedRun(workdir, config, dataset, graphdef, state._replace(params=params),
                    int(meta["epoch"]))
