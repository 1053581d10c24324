"""Training beyond one device: the ``(data, vocab)`` mesh, shardings, sharded top-K.

* ``mesh``: ``make_mesh(MeshSpec)``, shardings of batches / parameters / optimiser state,
  item-table padding, ``place_state``, ``shard_batch`` (each process its ``process_rows``).
* ``multihost``: joining JAX's distributed runtime (``initialize_multihost``), ``barrier``,
  ``is_primary`` (process 0 writes the run folder).
* ``topk``: full-ranking top-K over a vocab-sharded item table (never gathered).

The losses run vocabulary-parallel when built with the mesh (``srs_jax.losses.build_loss``); the
one step builder (``srs_jax.training.steps.make_train_step``) takes the mesh too. Nothing here
holds state between calls. See docs/distributed.md.
"""

from srs_jax.parallel.mesh import (
    DATA,
    VOCAB,
    batch_sharding,
    is_item_table,
    make_mesh,
    pad_item_table,
    pad_multiple,
    padded_like_training,
    place_state,
    process_rows,
    replicated,
    run_mesh,
    shard_batch,
    shard_tree,
    sharded_table,
    state_shardings,
    table_mesh,
    table_rows,
    unpad_item_table,
)
from srs_jax.parallel.multihost import (
    DistributedStartError,
    barrier,
    from_primary,
    initialize_multihost,
    is_primary,
)
from srs_jax.parallel.topk import sharded_top_k, top_k_items_sharded

__all__ = [
    "DATA", "VOCAB", "DistributedStartError", "barrier", "batch_sharding", "from_primary",
    "initialize_multihost",
    "is_item_table", "is_primary", "make_mesh", "pad_item_table", "pad_multiple",
    "padded_like_training", "place_state", "process_rows", "replicated", "run_mesh",
    "shard_batch", "shard_tree", "sharded_table", "sharded_top_k", "state_shardings",
    "table_mesh", "table_rows", "top_k_items_sharded", "unpad_item_table",
]
