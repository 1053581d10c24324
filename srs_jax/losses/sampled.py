"""Sampled losses with negatives drawn in plain JAX (``srs_jax.losses.samplers``).

Notation: row ``r`` with output ``h_r``, positive label ``y_r``, negatives ``j_1..j_n``,
``s(i) = h_r . c_i`` (float32 accumulation). Every loss is a mean over ``where`` rows.

* ``ce_neg`` (CE-, reference §4.2): sampled softmax; negatives equal to ``y_r`` are excluded
  and each kept negative gets the logQ correction ``log(V-1) - log(n - collisions_r)``
  (uniform) or ``-log(n q_j)`` (popularity):
  ``loss_r = log(exp(s(y)) + sum_kept exp(s(j) + corr_j)) - s(y)``.
  Same estimator as ``pallas_kernels.sampled_linear_cross_entropy`` (given the same ids).
* ``bce`` / ``bce_plus`` (reference §4.3): ``loss_r = -(log sig(s(y)) + sum_j log sig(-s(j)))``
  with 1 / ``n`` negatives, no rejection of accidental positives and no correction. (The
  reference writes ``log(sig(x) + 1e-6)`` clamped to [-100, 100]; we use the exact, stable
  ``log_sigmoid``: identical except for logits beyond ~|13|.)
* ``gbce`` (gSASRec, Petrov & Macdonald 2023; reference §4.4): ``n`` uniform negatives among the
  ``V - 1`` non-target items, ``alpha = n / (V - 1)``, ``beta = 1 - t (1 - alpha)``,
  ``loss_r = -(beta log sig(s(y)) + sum_j log sig(-s(j)))``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from srs_jax.losses import samplers
from srs_jax.losses.common import masked_mean, num_negatives, option, row_dot, safe_labels


def negative_logits(hidden, classifier, neg_ids):
    """float32 ``[N, n]`` logits of ``neg_ids`` (``[N, n]`` per row, or ``[1, n]`` shared by all rows)."""
    if neg_ids.shape[0] == 1 and hidden.shape[0] != 1:  # shared set: one [N, H] x [H, n] matmul
        rows = classifier[neg_ids[0]].astype(hidden.dtype)
        return jnp.einsum("nh,kh->nk", hidden, rows, preferred_element_type=jnp.float32)
    rows = classifier[neg_ids].astype(hidden.dtype)  # [N, n, H]: the CE- memory cost
    return jnp.einsum("nh,nkh->nk", hidden, rows, preferred_element_type=jnp.float32)


def negative_ids(cfg, key, n_rows: int, n_items: int, *, kind=None, labels=None, where=None,
                 item_counts=None):
    """The negative labels loss ``kind`` (default ``cfg.type``) draws from ``key`` (tests, analysis).

    Returns ``int32[n_rows, n]``, or ``[1, n]`` for ``sharing='batch'``.
    """
    kind = kind or option(cfg, "type")
    n = 1 if kind == "bce" else num_negatives(cfg)
    if kind == "gbce":
        return _gbce_negatives(key, safe_labels(labels, where), n, n_items)
    sharing = option(cfg, "sharing")
    ids = samplers.sample_negatives(key, n_rows, n, n_items, sampler=option(cfg, "sampler"),
                                    item_counts=item_counts, sharing=sharing)
    return ids[:1] if sharing == "batch" else ids


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


def ce_neg(cfg, hidden, classifier, labels, where, *, key, item_counts=None):
    """CE- (sampled softmax with logQ correction), negatives from ``key``."""
    _check_catalog(classifier)
    neg_ids = negative_ids(cfg, key, hidden.shape[0], classifier.shape[0], kind="ce_neg",
                           item_counts=item_counts)
    return sampled_softmax_loss(hidden, classifier, labels, where, neg_ids,
                                sampler=option(cfg, "sampler"), item_counts=item_counts)


def bce(cfg, hidden, classifier, labels, where, *, key, item_counts=None):
    """Classic SASRec BCE: one negative per positive."""
    neg_ids = negative_ids(cfg, key, hidden.shape[0], classifier.shape[0], kind="bce",
                           item_counts=item_counts)
    return binary_loss(hidden, classifier, labels, where, neg_ids)


def bce_plus(cfg, hidden, classifier, labels, where, *, key, item_counts=None):
    """BCE+: BCE with ``num_negatives`` negatives per positive."""
    neg_ids = negative_ids(cfg, key, hidden.shape[0], classifier.shape[0], kind="bce_plus",
                           item_counts=item_counts)
    return binary_loss(hidden, classifier, labels, where, neg_ids)


def gbce_beta(n: int, n_items: int, t: float) -> float:
    """gSASRec's positive-term exponent ``beta = 1 - t (1 - n / (V - 1))``."""
    return 1.0 - t * (1.0 - n / (n_items - 1))


def gbce(cfg, hidden, classifier, labels, where, *, key, item_counts=None):
    """gBCE: BCE+ with the calibrated positive term (uniform negatives, target excluded)."""
    del item_counts
    _check_catalog(classifier)
    if option(cfg, "sampler") != "uniform" or option(cfg, "sharing") != "row":
        raise ValueError("loss.type='gbce' supports only sampler='uniform' and sharing='row' "
                         "(its calibration assumes uniform per-row negatives)")
    t = float(option(cfg, "gbce_t"))
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"loss.gbce_t={t} must be in [0, 1]")
    n, n_items = num_negatives(cfg), classifier.shape[0]
    if n > n_items - 1:
        raise ValueError(f"loss.num_negatives={n} exceeds the V-1={n_items - 1} non-target items")
    neg_ids = negative_ids(cfg, key, hidden.shape[0], n_items, kind="gbce", labels=labels, where=where)
    return binary_loss(hidden, classifier, labels, where, neg_ids, beta=gbce_beta(n, n_items, t))


def _gbce_negatives(key, y, n, n_items):
    # Uniform over the V-1 labels != y: draw in [0, V-1) and skip over y.
    r = jax.random.randint(key, (y.shape[0], n), 0, n_items - 1, dtype=jnp.int32)
    return r + (r >= y[:, None]).astype(jnp.int32)


def _check_catalog(classifier):
    if classifier.shape[0] < 2:
        raise ValueError(f"sampled softmax needs a catalog of at least 2 items, got V={classifier.shape[0]}")
