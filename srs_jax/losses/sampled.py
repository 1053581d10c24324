"""Sampled losses with negatives drawn in plain JAX (``srs_jax.losses.samplers``).

Notation: row ``r`` with output ``h_r``, positive label ``y_r``, negatives ``j_1..j_n``,
``s(i) = h_r . c_i`` (float32 accumulation). Every loss is a mean over ``where`` rows.

* ``ce_neg`` (CE-, as in MemoryEfficientSRS): sampled softmax; negatives equal to ``y_r`` are excluded
  and each kept negative gets the logQ correction ``log(V-1) - log(n - collisions_r)``
  (uniform) or ``-log(n q_j)`` (popularity):
  ``loss_r = log(exp(s(y)) + sum_kept exp(s(j) + corr_j)) - s(y)``.
  Same estimator as ``pallas_kernels.sampled_linear_cross_entropy`` (given the same ids).
* ``bce`` / ``bce_plus`` (as in MemoryEfficientSRS): ``loss_r = -(log sig(s(y)) + sum_j log sig(-s(j)))``
  with 1 / ``n`` negatives, no rejection of accidental positives and no correction. (The
  reference writes ``log(sig(x) + 1e-6)`` clamped to [-100, 100]; we use the exact, stable
  ``log_sigmoid``: identical except for logits beyond ~|13|.)
* ``gbce`` (gSASRec, Petrov & Macdonald 2023): ``n`` uniform negatives among the
  ``V - 1`` non-target items, ``alpha = n / (V - 1)``, ``beta = 1 - t (1 - alpha)``,
  ``loss_r = -(beta log sig(s(y)) + sum_j log sig(-s(j)))``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from srs_jax.config.specs import LossSpec
from srs_jax.losses import samplers
from srs_jax.losses.base import Loss
from srs_jax.losses.common import masked_mean, row_dot, safe_labels


def negative_logits(hidden, classifier, neg_ids):
    """float32 ``[N, n]`` logits of ``neg_ids`` (``[N, n]`` per row, or ``[1, n]`` shared by all rows)."""
    if neg_ids.shape[0] == 1 and hidden.shape[0] != 1:  # shared set: one [N, H] x [H, n] matmul
        rows = classifier[neg_ids[0]].astype(hidden.dtype)
        return jnp.einsum("nh,kh->nk", hidden, rows, preferred_element_type=jnp.float32)
    rows = classifier[neg_ids].astype(hidden.dtype)  # [N, n, H]: the CE- memory cost
    return jnp.einsum("nh,nkh->nk", hidden, rows, preferred_element_type=jnp.float32)


def sampled_softmax_loss(hidden, classifier, labels, where, neg_ids, *, sampler="uniform", item_counts=None):
    """CE- on given negatives ``neg_ids`` (``[N, n]`` or shared ``[1, n]``) -> float32 scalar."""
    n_items, n = classifier.shape[0], neg_ids.shape[1]
    y = safe_labels(labels, where)
    pos = row_dot(hidden, classifier[y])
    neg = negative_logits(hidden, classifier, neg_ids)
    keep = neg_ids != y[:, None]
    if sampler == "uniform":
        kept = keep.sum(axis=1, keepdims=True)
        corr = math.log(n_items - 1) - jnp.log(jnp.maximum(kept, 1).astype(jnp.float32))
    else:
        corr = -(math.log(n) + samplers.log_q(neg_ids, n_items, sampler=sampler, item_counts=item_counts))
    neg = jnp.where(keep, neg + corr, -jnp.inf)
    # One logsumexp over [pos, negatives]: pos is finite, so rows whose negatives were all
    # excluded stay NaN-free (loss 0).
    lse = jax.nn.logsumexp(jnp.concatenate([pos[:, None], neg], axis=1), axis=1)
    return masked_mean(lse - pos, where)


def binary_loss(hidden, classifier, labels, where, neg_ids, *, beta=1.0):
    """``-(beta log sig(s(y)) + sum_j log sig(-s(j)))`` on given negatives -> float32 scalar."""
    y = safe_labels(labels, where)
    pos = row_dot(hidden, classifier[y])
    neg = negative_logits(hidden, classifier, neg_ids)
    row = -(beta * jax.nn.log_sigmoid(pos) + jax.nn.log_sigmoid(-neg).sum(axis=1))
    return masked_mean(row, where)


def gbce_beta(n: int, n_items: int, t: float) -> float:
    """gSASRec's positive-term exponent ``beta = 1 - t (1 - n / (V - 1))``."""
    return 1.0 - t * (1.0 - n / (n_items - 1))


def gbce_negatives(key, y, n, n_items):
    # Uniform over the V-1 labels != y: draw in [0, V-1) and skip over y.
    r = jax.random.randint(key, (y.shape[0], n), 0, n_items - 1, dtype=jnp.int32)
    return r + (r >= y[:, None]).astype(jnp.int32)


def check_catalog(n_items: int):
    if n_items < 2:
        raise ValueError(f"sampled losses need a catalog of at least 2 items, got V={n_items}")


class _NegativeSampling(Loss):
    """Negatives drawn in plain JAX from the step key (``samplers``), as the spec says."""

    def __init__(self, spec: LossSpec, n_items: int, item_counts=None):
        super().__init__(spec, n_items)
        self.num_negatives = 1 if spec.type == "bce" else int(spec.num_negatives)
        self.sampler, self.sharing = spec.sampler, spec.sharing
        # Label counts [V] (host array, a constant of the step), popularity sampler only.
        self.counts = None
        if spec.sampler == "popularity":
            self.counts = samplers.host_label_counts(item_counts, self.n_items)

    def negative_ids(self, key, n_rows: int, labels=None, where=None) -> jax.Array:
        """The negative labels drawn from ``key``: ``int32[n_rows, n]``, or ``[1, n]`` for
        ``sharing='batch'`` (tests and analysis call it too)."""
        ids = samplers.sample_negatives(key, n_rows, self.num_negatives, self.n_items,
                                        sampler=self.sampler, item_counts=self.counts,
                                        sharing=self.sharing)
        return ids[:1] if self.sharing == "batch" else ids


class SampledSoftmax(_NegativeSampling):
    """``ce_neg``: sampled softmax with the logQ correction."""

    name = "ce_neg"

    def __init__(self, spec: LossSpec, n_items: int, item_counts=None):
        check_catalog(n_items)
        super().__init__(spec, n_items, item_counts)

    def compute(self, hidden, classifier, labels, where, key):
        neg_ids = self.negative_ids(key, hidden.shape[0])
        return sampled_softmax_loss(hidden, classifier, labels, where, neg_ids, sampler=self.sampler,
                                    item_counts=self.counts)


class BinaryCE(_NegativeSampling):
    """``bce`` (one negative per positive) and ``bce_plus`` (``num_negatives``)."""

    def __init__(self, spec: LossSpec, n_items: int, item_counts=None):
        super().__init__(spec, n_items, item_counts)
        self.name = spec.type

    def compute(self, hidden, classifier, labels, where, key):
        return binary_loss(hidden, classifier, labels, where, self.negative_ids(key, hidden.shape[0]))


class GBCE(Loss):
    """``gbce``: BCE+ with gSASRec's calibrated positive term (uniform negatives, target excluded)."""

    name = "gbce"

    def __init__(self, spec: LossSpec, n_items: int, item_counts=None):
        del item_counts
        super().__init__(spec, n_items)
        check_catalog(n_items)
        self.num_negatives = int(spec.num_negatives)
        if self.num_negatives > n_items - 1:
            raise ValueError(f"loss.num_negatives={self.num_negatives} exceeds the V-1={n_items - 1} "
                             "non-target items: lower config.loss.num_negatives")
        self.beta = gbce_beta(self.num_negatives, n_items, float(spec.gbce_t))

    def negative_ids(self, key, n_rows: int, labels=None, where=None) -> jax.Array:
        return gbce_negatives(key, safe_labels(labels, where), self.num_negatives, self.n_items)

    def compute(self, hidden, classifier, labels, where, key):
        neg_ids = self.negative_ids(key, hidden.shape[0], labels, where)
        return binary_loss(hidden, classifier, labels, where, neg_ids, beta=self.beta)
