"""``ce``: full softmax cross-entropy over the whole catalog.

``loss = mean_{r: where_r} [ logsumexp_i (h_r . c_i) - h_r . c_{y_r} ]``. Materialises the
``[N, V]`` logits (float32), so it is the memory baseline that ``cce`` removes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from srs_jax.losses.base import Loss
from srs_jax.losses.common import masked_mean, row_dot, safe_labels


def full_softmax_loss(hidden, classifier, labels, where):
    """Full-softmax CE: hidden [N, H], classifier [V, H], labels int32[N], where bool[N] -> f32 scalar."""
    c = classifier.astype(hidden.dtype)
    logits = jnp.einsum("nh,vh->nv", hidden, c, preferred_element_type=jnp.float32)
    y = safe_labels(labels, where)
    pos = row_dot(hidden, c[y])
    return masked_mean(jax.nn.logsumexp(logits, axis=-1) - pos, where)


class FullSoftmax(Loss):
    """``ce``: the full softmax over the catalog (materialises the logits)."""

    name = "ce"

    def compute(self, hidden, classifier, labels, where, key):
        del key
        return full_softmax_loss(hidden, classifier, labels, where)
