"""Model registry.

Each model module (``srs_jax.models.<name>``) provides three functions, so the trainer never
branches on the model name:

* ``build(spec: ModelSpec, n_items, *, rngs, lookup=layers.gather) -> nnx.Module``: the network.
  Its ``__call__(input_ids int32[B, L], *, deterministic) -> hidden [B, L, H]``,
  ``output_embeddings() -> [V, H]`` and ``item_table`` (the ``nnx.Embed`` whose row ``v`` is item
  ``v``). ``lookup(table, ids)`` reads the input embeddings.
* ``training_inputs(batch, key, spec) -> (input_ids int32[B, L], target_ids int32[B, L])``:
  turns a training batch (``inputs``/``targets`` from ``srs_jax.data.batches.training_windows``)
  into model inputs and per-position target item ids (0 = no target). Pure and jittable.
* ``eval_inputs(history int32[B, L], spec) -> int32[B, L]``: the model input for ranking the next
  item after ``history`` (last ``L`` items, left-padded); the score is read at position ``L - 1``.
"""

from __future__ import annotations

from types import ModuleType
from typing import Callable

from srs_jax.config.names import MODEL_NAMES
from srs_jax.config.specs import ModelSpec
from srs_jax.models import bert4rec, sasrec
from srs_jax.models.layers import gather

MODELS: dict[str, ModuleType] = {"sasrec": sasrec, "bert4rec": bert4rec}
assert set(MODELS) == set(MODEL_NAMES)


def model_module(name: str) -> ModuleType:
    """The module implementing model ``name`` (see the module docstring)."""
    return MODELS[name]


def build_model(spec: ModelSpec, n_items: int, *, rngs, lookup: Callable = gather):
    """Builds ``spec.name`` for a catalog of ``n_items`` items (ids 1..n_items)."""
    return MODELS[spec.name].build(spec, n_items, rngs=rngs, lookup=lookup)


__all__ = ["MODELS", "build_model", "gather", "model_module"]
