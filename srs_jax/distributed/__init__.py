"""Training beyond one device: a ``(data, vocab)`` mesh, sharded state, vocabulary-parallel losses.

* ``mesh``: ``make_mesh(config.mesh)``, shardings, item-table padding.
* ``loss``: ``loss_hook`` (the trainer's call into ``pallas_kernels.vocab_parallel``).
* ``lookup``: ``sharded_lookup`` / ``lookup_hook`` (input embeddings from the sharded table).
* ``training``: ``place_state``, ``shard_batch``, ``make_sharded_train_step``.
* ``topk``: full-ranking top-K over a sharded item table.

See docs/distributed.md.
"""

from srs_jax.distributed.loss import (
    LossPlan,
    classifier_hook,
    current_plan,
    loss_hook,
    make_loss_plan,
    use_plan,
)
from srs_jax.distributed.lookup import lookup_hook, resolve_lookup, sharded_lookup
from srs_jax.distributed.mesh import (
    DATA,
    VOCAB,
    MeshConfig,
    batch_sharding,
    make_mesh,
    mesh_config,
    pad_item_table,
    replicated,
    shard_tree,
    state_shardings,
    unpad_item_table,
)
from srs_jax.distributed.topk import sharded_top_k, top_k_items_sharded
from srs_jax.distributed.training import (
    init_sharded_state,
    make_sharded_train_step,
    padded_like_training,
    place_state,
    setup_training,
    shard_batch,
    sharded_table,
    table_rows,
    top_k_hook,
)

__all__ = [
    "DATA", "VOCAB", "LossPlan", "MeshConfig", "batch_sharding", "classifier_hook",
    "current_plan", "init_sharded_state", "lookup_hook", "loss_hook", "make_loss_plan",
    "make_mesh",
    "make_sharded_train_step", "mesh_config", "pad_item_table", "padded_like_training",
    "place_state", "replicated", "resolve_lookup",
    "setup_training", "shard_batch", "shard_tree", "sharded_lookup", "sharded_table",
    "sharded_top_k",
    "state_shardings", "table_rows", "top_k_hook", "top_k_items_sharded", "unpad_item_table",
    "use_plan",
]
