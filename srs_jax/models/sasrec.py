"""SASRec (Kang & McAuley 2018) exactly as MemoryEfficientSRS builds it.

Input ``input_ids int32[B, L]`` holds encoded items ``1..V``, ``0`` = padding (left-padded, the
newest item at position ``L - 1``). Output ``hidden [B, L, H]`` in the compute dtype; position
``t`` predicts the item at ``t + 1``, scored against ``output_embeddings() [V, H]`` (tied to the
input item table, no bias).

Forward pass (LayerNorm eps 1e-8 everywhere):
  h = Dropout(E[x] * sqrt(H) + P) * m                                   m = (x != 0)
  per block:  q = LN(h);  h = q + MHA(query=q, key=h, value=h, causal)
              u = LN(h);  h = (u + Dropout(W2 Dropout(ReLU(W1 u)))) * m
  z = LN(h)
Attention uses only the causal mask (no key-padding mask, as the reference): zeroed padded rows act
as a learned "null" key/value, as in the reference.

``ModelSpec`` fields: ``hidden``, ``num_blocks``, ``num_heads``, ``dropout``, ``max_len``,
``compute_dtype`` ('float32' | 'bfloat16'; parameters stay float32). ``lookup(table, ids)`` reads
the input embeddings (default ``layers.gather``, i.e. ``table[ids]``).
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from srs_jax.config.specs import ModelSpec
from srs_jax.models.layers import LayerNorm, PreLNBlock, causal_mask, compute_dtype, gather, xavier_normal

LAYER_NORM_EPS = 1e-8


class SASRec(nnx.Module):
    """SASRec over a catalog of ``n_items`` items (table rows: 0 = padding, 1..V = items)."""

    def __init__(self, n_items: int, *, hidden: int, num_blocks: int, num_heads: int, dropout: float,
                 max_len: int, dtype=jnp.float32, lookup: Callable = gather, rngs: nnx.Rngs):
        if n_items < 1:
            raise ValueError(f"n_items={n_items}: the catalog must hold at least one item")
        if hidden < 1 or num_blocks < 1 or num_heads < 1 or max_len < 1:
            raise ValueError(f"hidden={hidden}, num_blocks={num_blocks}, num_heads={num_heads}, "
                             f"max_len={max_len}: all must be positive integers")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout} must be in [0, 1)")
        self.n_items = n_items
        self.hidden = hidden
        self.max_len = max_len
        self.dtype = dtype
        self.lookup = lookup  # (table [R, H], ids int[B, L]) -> [B, L, H]
        # V + 1 rows; the pad row 0 is random like the reference's (harmless: padded rows are zeroed).
        self.item_table = nnx.Embed(n_items + 1, hidden, embedding_init=xavier_normal, rngs=rngs)
        self.positions = nnx.Param(xavier_normal(rngs.params(), (max_len, hidden), jnp.float32))
        self.emb_dropout = nnx.Dropout(dropout, rngs=rngs)
        self.blocks = nnx.List([PreLNBlock(hidden, num_heads, dropout=dropout, eps=LAYER_NORM_EPS,
                                           dtype=dtype, rngs=rngs) for _ in range(num_blocks)])
        self.final_norm = LayerNorm(hidden, eps=LAYER_NORM_EPS, dtype=dtype)

    def __call__(self, input_ids: jax.Array, *, deterministic: bool) -> jax.Array:
        """input_ids int32[B, L] (L <= max_len) -> hidden [B, L, H] in the compute dtype."""
        length = input_ids.shape[-1]
        if length > self.max_len:
            raise ValueError(f"input length {length} exceeds max_len={self.max_len}: "
                             "truncate the sequences or raise model.max_len")
        keep = (input_ids != 0)[..., None].astype(self.dtype)
        # Positions are aligned to the right end (the newest item always sits at max_len - 1),
        # which equals the reference's 0..L-1 when L == max_len.
        pos = self.positions[...][self.max_len - length:]
        emb = self.lookup(self.item_table.embedding[...], input_ids)
        h = emb * math.sqrt(self.hidden) + pos
        h = self.emb_dropout(h.astype(self.dtype), deterministic=deterministic) * keep
        mask = causal_mask(length)
        for block in self.blocks:
            h = block(h, keep, mask, deterministic=deterministic)
        return self.final_norm(h)

    def output_embeddings(self) -> jax.Array:
        """[V, H] float32: table rows of items 1..V (row v-1 scores item v; label = item id - 1)."""
        return self.item_table.embedding[...][1:]


def build(spec: ModelSpec, n_items: int, *, rngs: nnx.Rngs, lookup: Callable = gather) -> SASRec:
    """Builds SASRec from a ``ModelSpec`` (fields in the module docstring)."""
    return SASRec(n_items, hidden=spec.hidden, num_blocks=spec.num_blocks, num_heads=spec.num_heads,
                  dropout=spec.dropout, max_len=spec.max_len, dtype=compute_dtype(spec.compute_dtype),
                  lookup=lookup, rngs=rngs)


def training_inputs(batch, key, spec: ModelSpec):
    """Causal LM setup: the window inputs and their next-item targets (0 = no target)."""
    del key, spec
    return batch["inputs"], batch["targets"]


def eval_inputs(history, spec: ModelSpec):
    """SASRec reads the next-item score at position L - 1 of the plain history."""
    del spec
    return history
