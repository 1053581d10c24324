"""Helpers shared by the losses: masking, row logits, shape checks."""

from __future__ import annotations

import jax
import jax.numpy as jnp

def safe_labels(labels: jax.Array, where: jax.Array) -> jax.Array:
    """Labels of masked rows (may be -1 / garbage) replaced by 0 so gathers stay in range."""
    return jnp.where(where, labels, 0).astype(jnp.int32)


def masked_mean(row_loss: jax.Array, where: jax.Array) -> jax.Array:
    """float32 mean of ``row_loss [N]`` over ``where`` rows (0.0 when no row counts)."""
    row_loss = jnp.where(where, row_loss.astype(jnp.float32), 0.0)
    return row_loss.sum() / jnp.maximum(where.sum(), 1).astype(jnp.float32)


def row_dot(hidden: jax.Array, rows: jax.Array) -> jax.Array:
    """``sum(hidden * rows, -1)`` with float32 accumulation: hidden [N, H], rows [N, H] -> [N]."""
    return jnp.einsum("nh,nh->n", hidden, rows.astype(hidden.dtype), preferred_element_type=jnp.float32)


def check_shapes(hidden, classifier, labels, where) -> None:
    if hidden.ndim != 2 or classifier.ndim != 2 or hidden.shape[1] != classifier.shape[1]:
        raise ValueError(f"hidden [N, H] and classifier [V, H] expected, got {hidden.shape} and "
                         f"{classifier.shape}: flatten [B, L, H] outputs to [B*L, H]")
    if labels.shape != hidden.shape[:1] or where.shape != hidden.shape[:1]:
        raise ValueError(f"labels {labels.shape} and where {where.shape} must both be [N]={hidden.shape[:1]}")
