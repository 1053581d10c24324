"""Model registry.

Each model module (``srs_jax.models.<name>``) provides three functions, so the trainer never
branches on the model name:

* ``build(model_config, n_items, *, rngs) -> nnx.Module``: the network. Its ``__call__(input_ids
  int32[B, L], *, deterministic) -> hidden [B, L, H]`` and ``output_embeddings() -> [V, H]``.
* ``training_inputs(batch, key, model_config) -> (input_ids int32[B, L], target_ids int32[B, L])``:
  turns a training batch (``inputs``/``targets`` from ``srs_jax.data.batches.training_windows``)
  into model inputs and per-position target item ids (0 = no target). Pure and jittable.
* ``eval_inputs(history int32[B, L], model_config) -> int32[B, L]``: the model input for ranking
  the next item after ``history`` (last ``L`` items, left-padded); the score is read at position
  ``L - 1``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

MODEL_MODULES = {"sasrec": "srs_jax.models.sasrec", "bert4rec": "srs_jax.models.bert4rec"}


def model_module(name: str) -> ModuleType:
    """Returns the module implementing model ``name`` (see the module docstring)."""
    if name not in MODEL_MODULES:
        raise ValueError(f"unknown model {name!r}: set config.model.name to one of {sorted(MODEL_MODULES)}")
    return importlib.import_module(MODEL_MODULES[name])


def build_model(model_config, n_items: int, *, rngs):
    """Builds ``model_config.name`` for a catalog of ``n_items`` items (ids 1..n_items)."""
    return model_module(model_config.name).build(model_config, n_items, rngs=rngs)
