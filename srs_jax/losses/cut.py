"""``cce`` and ``cce_neg``: the Cut Cross-Entropy kernels of ``pallas_kernels``.

* ``cce``: exact full-softmax CE (same value as ``ce``) without the ``[N, V]`` logits:
  ``pallas_kernels.linear_cross_entropy``.
* ``cce_neg``: CE- with negatives generated inside the kernels (same estimator as ``ce_neg``,
  different random ids): ``pallas_kernels.sampled_linear_cross_entropy``; its seed is drawn
  from the step key. Popularity sampling needs concrete ``item_counts`` (not a jit argument),
  because the kernels build an alias table from them once on the host.

Inside an active ``srs_jax.distributed`` mesh both defer to its vocabulary-parallel versions
(``classifier_hook``; outside a mesh that is one lookup at trace time and returns None).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from srs_jax.losses.common import masked_mean, num_negatives, option, safe_labels


def cce(cfg, hidden, classifier, labels, where, *, key=None, item_counts=None):
    """Full-softmax CE through the CCE kernels -> f32 scalar (mean over ``where`` rows)."""
    del item_counts
    sharded = _mesh_loss(cfg, hidden, classifier, labels, where, key)
    if sharded is not None:
        return sharded
    import pallas_kernels

    rows = pallas_kernels.linear_cross_entropy(hidden, classifier, safe_labels(labels, where), where=where,
                                               reduction="none", impl=option(cfg, "impl"))
    return masked_mean(rows, where)


def _mesh_loss(cfg, hidden, classifier, labels, where, key):
    """The vocabulary-parallel loss when a device mesh is active (docs/distributed.md), else None."""
    from srs_jax.distributed.loss import classifier_hook  # late: that module imports this one

    return classifier_hook(cfg, hidden, classifier, labels, where, key=key)


def kernel_seed(key: jax.Array) -> jax.Array:
    """The uint32 seed of the in-kernel sampler, derived from a JAX key."""
    return jax.random.bits(key, (), jnp.uint32)


def cce_neg(cfg, hidden, classifier, labels, where, *, key, item_counts=None):
    """CE- through the CCE- kernels (negatives drawn in-kernel from a seed of ``key``) -> f32 scalar."""
    sharded = _mesh_loss(cfg, hidden, classifier, labels, where, key)
    if sharded is not None:
        return sharded
    import pallas_kernels

    sampler = option(cfg, "sampler")
    counts = None
    if sampler == "popularity":
        counts = item_counts
        if counts is not None and not hasattr(counts, "log_q") and np.shape(counts) == (classifier.shape[0] + 1,):
            counts = counts[1:]  # encoded ids (slot 0 = padding) -> labels 0..V-1
    # reduction="mean" (the mean over ``where`` rows, as masked_mean): a scalar loss lets row
    # sharing run the one-pass kernel (cce_neg/fused.py), which per-row losses cannot.
    return pallas_kernels.sampled_linear_cross_entropy(
        hidden, classifier, safe_labels(labels, where), num_negatives=num_negatives(cfg),
        seed=kernel_seed(key), sampler=sampler, item_counts=counts, sharing=option(cfg, "sharing"),
        where=where, reduction="mean", impl=option(cfg, "impl"),
        dc_accum=option(cfg, "dc_accum"), row_sampling=option(cfg, "row_sampling"))
