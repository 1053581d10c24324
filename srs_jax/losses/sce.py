"""``sce``: Scalable Cross-Entropy (Mezentsev et al., RecSys 2024).

For rows ``x_r = hidden[r]`` with labels ``y_r`` and items ``w = classifier``:
1. ``n_b`` bucket centres ``U [n_b, H]`` (no gradient): random mixtures of the batch outputs,
   ``U = Omega^T x`` with ``Omega ~ H^(-1/4) N(0, 1)`` of shape ``[N, n_b]`` (``sce_mix_x``), or
   ``U ~ H^(-1/4) N(0, 1)`` directly.
2. Per bucket: the ``bucket_size_x`` rows with the largest ``U_b . x_r`` (``where`` rows only) and
   the ``bucket_size_y`` items with the largest ``U_b . w_i`` (chunked top-K over the catalog).
3. Per selected (bucket, row): CE over the bucket's items plus the row's correct logit, items
   equal to the row's target removed: ``lse([x_r . w_i]_{i in bucket, i != y_r}, x_r . w_{y_r}) - x_r . w_{y_r}``.
4. Per row: the maximum over the buckets that selected it; the loss is the mean over selected rows
   (rows no bucket selected do not count).

Differences from the reference code (deliberate): gradients flow into the item embeddings (the
reference detaches them); masked rows never enter the mixtures, the row selection or the
mean (the reference mixes padded rows in and can select them when a bucket lacks valid rows).
Bucket sizes are clipped to ``N`` and ``V``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from srs_jax.config.specs import LossSpec
from srs_jax.losses.base import Loss
from srs_jax.losses.common import row_dot, safe_labels
from srs_jax.metrics.topk import chunked_top_k


class ScalableCE(Loss):
    """``sce``: Scalable Cross-Entropy with the spec's bucket settings."""

    name = "sce"

    def __init__(self, spec: LossSpec, n_items: int, item_counts=None):
        del item_counts
        super().__init__(spec, n_items)
        self.n_buckets, self.mix_x = int(spec.sce_n_buckets), bool(spec.sce_mix_x)
        self.bucket_size_x, self.bucket_size_y = int(spec.sce_bucket_size_x), int(spec.sce_bucket_size_y)
        self.item_chunk = int(spec.sce_item_chunk)

    def compute(self, hidden, classifier, labels, where, key):
        return scalable_ce(hidden, classifier, labels, where, key, n_buckets=self.n_buckets,
                           bucket_size_x=self.bucket_size_x, bucket_size_y=self.bucket_size_y,
                           mix_x=self.mix_x, item_chunk=self.item_chunk)


def scalable_ce(hidden, classifier, labels, where, key, *, n_buckets: int, bucket_size_x: int,
                bucket_size_y: int, mix_x: bool = True, item_chunk: int = 65536):
    """Scalable CE: hidden [N, H], classifier [V, H], labels int32[N], where bool[N] -> f32 scalar."""
    n_rows, dim = hidden.shape
    n_items = classifier.shape[0]
    size_x = min(bucket_size_x, n_rows)
    size_y = min(bucket_size_y, n_items)
    y = safe_labels(labels, where)
    correct = row_dot(hidden, classifier[y])  # [N] float32, with gradient

    # Bucket centres and selections carry no gradient.
    x0 = jax.lax.stop_gradient(hidden).astype(jnp.float32) * where[:, None]
    scale = dim ** -0.25
    if mix_x:
        omega = scale * jax.random.normal(key, (n_rows, n_buckets), jnp.float32)
        centres = omega.T @ x0
    else:
        centres = scale * jax.random.normal(key, (n_buckets, dim), jnp.float32)
    row_scores = jnp.where(where[None, :], centres @ x0.T, -jnp.inf)  # [n_b, N]
    _, rows = jax.lax.top_k(row_scores, size_x)  # [n_b, bx]
    row_ok = where[rows]
    _, items = chunked_top_k(centres, jax.lax.stop_gradient(classifier), size_y,
                             item_chunk=item_chunk)  # [n_b, by]

    logits = jnp.einsum("bxh,byh->bxy", hidden[rows], classifier[items].astype(hidden.dtype),
                        preferred_element_type=jnp.float32)
    target = y[rows]
    logits = jnp.where(items[:, None, :] == target[:, :, None], -jnp.inf, logits)
    c = correct[rows]
    # The correct logit joins the row's logits (one finite entry keeps the gradient NaN-free).
    lse = jax.nn.logsumexp(jnp.concatenate([logits, c[..., None]], axis=-1), axis=-1)
    ce = jnp.where(row_ok, lse - c, -jnp.inf)  # [n_b, bx]

    # Max over buckets per row; the gradient goes to exactly one (the first) maximal entry.
    flat_rows, flat_ce = rows.reshape(-1), ce.reshape(-1)
    best = jnp.full((n_rows,), -jnp.inf, jnp.float32).at[flat_rows].max(jax.lax.stop_gradient(flat_ce))
    order = jnp.arange(flat_ce.shape[0])
    is_max = (flat_ce == best[flat_rows]) & jnp.isfinite(flat_ce)
    first = jnp.full((n_rows,), flat_ce.shape[0]).at[flat_rows].min(jnp.where(is_max, order, flat_ce.shape[0]))
    chosen = order == first[flat_rows]
    n_selected = jnp.isfinite(best).sum()
    total = jnp.where(chosen, flat_ce, 0.0).sum()
    return total / jnp.maximum(n_selected, 1).astype(jnp.float32)
