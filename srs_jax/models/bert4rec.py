"""BERT4Rec (Sun et al., CIKM 2019): a bidirectional transformer trained with the cloze task.

Architecture (the paper's, section 3, with the arrangement of its reference code):

* Item table with ``V + 2`` rows: row 0 = padding, rows ``1..V`` = items, row ``V + 1`` = the
  learned ``[mask]`` item. Inputs may also carry ``MASK_TOKEN`` (-1) for ``[mask]``:
  ``training_inputs`` / ``eval_inputs`` do not know ``V``, the model maps -1 to row ``V + 1``.
* ``h0 = Dropout(LN(E[ids] + P))``: learned absolute positions, no ``sqrt(H)`` scaling. With
  left padding the newest item sits at the last position; an input shorter than ``max_len`` uses
  the last rows of ``P``, so an unpadded suffix sees the same positions as its padded window.
* ``num_blocks`` post-LN transformer blocks, exactly the paper's eq. (4)-(5):
  ``A = LN(h + Dropout(MHA(h)))``, ``h' = LN(A + Dropout(FFN(A)))``, FFN = Linear(H, 4H), GELU
  (erf form), Linear(4H, H). Attention is bidirectional and masks padded KEYS: a padded position
  is never attended to, so real outputs do not depend on padding at all. Attention
  probabilities get dropout too (as in BERT).
* Output head: the paper's ``GELU(h W + b)`` projection followed by LayerNorm is applied inside
  ``__call__`` (``model.head_transform``, default True: it only depends on ``h``), and the logits
  are ``h_out @ E[1..V]^T`` with the table tied to the input items. The paper's per-item output
  bias ``b^O`` is NOT used: every loss family and the CCE / CCE- kernels score rows as plain dot
  products with ``output_embeddings()``; a ``[V]`` bias would have to be threaded through all of
  them (and through chunked top-K evaluation) for a term that acts as a popularity prior.
* Initialisation as BERT: truncated normal (std 0.02) for matrices, embeddings and positions;
  zero biases; LayerNorm eps 1e-12, computed in float32. The padding row starts at zero.

Cloze task (``training_inputs``, pure JAX, run inside the jitted step with a fresh key, so every
epoch re-masks every sequence):

* the sequence is ``batch["targets"]``: the last ``L`` items of each user, left-padded with 0;
* with probability ``last_item_mask_prob`` a row becomes a *next-item* sample: only its last
  (newest) real item is masked, which is exactly the evaluation input (the paper's "samples that
  only mask the last item", section 3.6, drawn per row and step instead of duplicating data);
* otherwise each real position is masked independently with probability ``mask_prob``; a
  non-empty row that drew no mask gets one uniformly random real position masked;
* masked positions are replaced by ``[mask]`` (no BERT 80/10/10 replacement: the paper masks
  only) and carry their item as target; every other position has target 0 (padding positions are
  never masked, never attended to and never predicted).

Evaluation (``eval_inputs``): drop the oldest position of the last-``L`` history and append
``[mask]``; the next-item scores are read at position ``L - 1``.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

from srs_jax.config.specs import ModelSpec
from srs_jax.models.layers import (
    BERT_LN_EPS,
    PostLNBlock,
    bert_dense,
    bert_layer_norm,
    compute_dtype,
    gather,
    trunc_normal,
)

MASK_TOKEN = -1  # input id meaning "[mask]" (mapped to table row V + 1 by the model)
LN_EPS = BERT_LN_EPS


class Bert4Rec(nnx.Module):
    """BERT4Rec encoder: ``__call__(ids int32[B, T], *, deterministic) -> hidden [B, T, H]``.

    ``ids``: 0 = padding, 1..V items, ``V + 1`` or ``MASK_TOKEN`` (-1) = ``[mask]``; ``T <=
    max_len``. Ids outside ``[-1, V + 1]`` are not checked inside jit (gathers clamp them).
    """

    def __init__(
        self,
        n_items: int,
        *,
        hidden: int,
        num_blocks: int,
        num_heads: int,
        dropout: float,
        max_len: int,
        compute_dtype: Any = jnp.float32,
        head_transform: bool = True,
        lookup: Callable = gather,
        rngs: nnx.Rngs,
    ):
        if n_items < 1:
            raise ValueError(f"BERT4Rec needs at least one item, got n_items={n_items}: check the prepared dataset")
        if hidden < 1 or num_heads < 1 or hidden % num_heads:
            raise ValueError(f"model.hidden={hidden} must be a positive multiple of model.num_heads={num_heads}")
        if num_blocks < 1 or max_len < 1:
            raise ValueError(f"model.num_blocks={num_blocks} and model.max_len={max_len} must be >= 1")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"model.dropout={dropout} must be in [0, 1)")
        self.n_items = n_items
        self.mask_id = n_items + 1
        self.max_len = max_len
        self.dtype = jnp.dtype(compute_dtype)
        self.lookup = lookup  # (table [R, H], ids int[B, T]) -> [B, T, H]
        # Rows: 0 padding (zeroed), 1..V items, V+1 [mask].
        self.item_table = nnx.Embed(
            n_items + 2, hidden, dtype=self.dtype, param_dtype=jnp.float32, embedding_init=trunc_normal, rngs=rngs
        )
        self.item_table.embedding[...] = self.item_table.embedding[...].at[0].set(0.0)
        self.positions = nnx.Param(trunc_normal(rngs.params(), (max_len, hidden), jnp.float32))
        self.embed_norm = bert_layer_norm(hidden, rngs)
        self.embed_dropout = nnx.Dropout(dropout, rngs=rngs)
        self.blocks = nnx.List([PostLNBlock(hidden, num_heads, dropout, self.dtype, rngs=rngs)
                                for _ in range(num_blocks)])
        if head_transform:
            self.head_dense = bert_dense(hidden, hidden, self.dtype, rngs)
            self.head_norm = bert_layer_norm(hidden, rngs)
        else:
            self.head_dense = nnx.data(None)
            self.head_norm = nnx.data(None)

    def __call__(self, input_ids: jax.Array, *, deterministic: bool) -> jax.Array:
        """input_ids: int32[B, T] -> hidden [B, T, H] in the compute dtype (dropout draws from
        the ``dropout`` RNG streams given at construction; the trainer re-seeds them per step)."""
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be int[B, T], got shape {input_ids.shape}")
        t = input_ids.shape[1]
        if t > self.max_len:
            raise ValueError(f"input length {t} exceeds model.max_len={self.max_len}: cut inputs to the last max_len items")
        ids = jnp.where(input_ids == MASK_TOKEN, self.mask_id, input_ids).astype(jnp.int32)
        key_valid = ids != 0
        emb = self.lookup(self.item_table.embedding[...], ids)
        x = emb + self.positions[...][self.max_len - t :][None]
        x = self.embed_norm(x).astype(self.dtype)
        x = self.embed_dropout(x, deterministic=deterministic)
        for block in self.blocks:
            x = block(x, key_valid, deterministic=deterministic)
        if self.head_dense is not None:
            x = self.head_norm(jax.nn.gelu(self.head_dense(x), approximate=False)).astype(self.dtype)
        return x

    def output_embeddings(self) -> jax.Array:
        """Tied classifier: rows of items 1..V of the input table, [V, H] in the compute dtype."""
        return self.item_table.embedding[...][1 : self.n_items + 1].astype(self.dtype)


def build(spec: ModelSpec, n_items: int, *, rngs: nnx.Rngs, lookup: Callable = gather) -> Bert4Rec:
    """Builds BERT4Rec from a ``ModelSpec`` (hidden, num_blocks, num_heads, dropout, max_len,
    compute_dtype, head_transform; mask_prob / last_item_mask_prob are used by
    ``training_inputs``) for items ``1..n_items``."""
    return Bert4Rec(n_items, hidden=spec.hidden, num_blocks=spec.num_blocks, num_heads=spec.num_heads,
                    dropout=spec.dropout, max_len=spec.max_len,
                    compute_dtype=compute_dtype(spec.compute_dtype), head_transform=spec.head_transform,
                    lookup=lookup, rngs=rngs)


def training_inputs(batch: dict, key: jax.Array, spec: ModelSpec) -> tuple[jax.Array, jax.Array]:
    """Cloze masking of ``batch["targets"]`` (int32[B, L], last L items, left-padded with 0).

    Returns ``(input_ids int32[B, L], target_ids int32[B, L])``: masked positions hold
    ``MASK_TOKEN`` in the input and their item in the target; all other targets are 0, so the
    loss's ``where = target_ids > 0`` selects exactly the masked positions. Pure and jittable.
    """
    if "targets" not in batch:
        raise ValueError("BERT4Rec training batches need 'targets' (from srs_jax.data.batches.training_windows)")
    mask_prob, last_prob = spec.mask_prob, spec.last_item_mask_prob
    seq = jnp.asarray(batch["targets"]).astype(jnp.int32)
    b, length = seq.shape
    real = seq > 0
    k_cloze, k_pick, k_last = jax.random.split(key, 3)

    cloze = real & (jax.random.uniform(k_cloze, (b, length)) < mask_prob)
    # Rows that drew no mask get one uniformly chosen real position (argmax of uniform noise).
    noise = jnp.where(real, jax.random.uniform(k_pick, (b, length)), -1.0)
    forced = real & (jnp.arange(length)[None] == jnp.argmax(noise, axis=1)[:, None])
    cloze = jnp.where(cloze.any(axis=1, keepdims=True), cloze, forced)

    # Next-item rows: only the newest real item (the right-most real position) is masked.
    last_pos = length - 1 - jnp.argmax(real[:, ::-1], axis=1)
    last_only = real & (jnp.arange(length)[None] == last_pos[:, None])
    next_item_row = jax.random.uniform(k_last, (b, 1)) < last_prob
    masked = jnp.where(next_item_row, last_only, cloze)

    input_ids = jnp.where(masked, MASK_TOKEN, seq)
    target_ids = jnp.where(masked, seq, 0)
    return input_ids, target_ids


def eval_inputs(history: jax.Array, spec: ModelSpec) -> jax.Array:
    """history int32[B, L] (last L items, left-padded) -> int32[B, L]: the oldest position
    dropped and ``[mask]`` appended; the next-item scores are read at position ``L - 1``."""
    del spec
    history = jnp.asarray(history).astype(jnp.int32)
    if history.ndim != 2 or history.shape[1] < 1:
        raise ValueError(f"history must be int[B, L] with L >= 1, got shape {history.shape}")
    mask_col = jnp.full((history.shape[0], 1), MASK_TOKEN, jnp.int32)
    return jnp.concatenate([history[:, 1:], mask_col], axis=1)
