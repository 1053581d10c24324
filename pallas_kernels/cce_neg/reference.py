"""Explicit gather-based references for the CCE- loss, given the per-row negative ids.

Semantics (shared by every implementation in this package and by the ``ce_neg`` loss):
for row ``r`` with embedding ``e_r``, target ``t_r`` and negatives ``neg_r1 .. neg_rn``

* ``s_pos = e_r . c_{t_r}``;
* negatives equal to ``t_r`` are excluded; ``n_eff_r = n - #{j : neg_rj == t_r}``;
* each kept negative gets the logQ-corrected logit ``s_rj = e_r . c_{neg_rj} + corr_rj`` with
  ``corr_rj = log(V - 1) - log(n_eff_r)`` (uniform) or ``corr_rj = -log(n * q_{neg_rj})``
  (popularity, ``q`` the sampling distribution);
* ``loss_r = log(exp(s_pos) + sum_kept exp(s_rj)) - s_pos`` (0 when every negative was excluded).

The uniform case is exactly MemoryEfficientSRS's CE- (collisions masked, correction
``log(V-1) - log(n - #collisions)``), for ``n <= V``. ``where`` masks rows; ``mean`` is over the
``where`` rows (0 if there are none).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def _corrections(neg_ids, targets, num_items, sampler, log_q, xp):
    n = neg_ids.shape[1]
    keep = neg_ids != targets[:, None]
    if sampler == "uniform":
        n_eff = keep.sum(axis=1, keepdims=True)
        corr = math.log(num_items - 1) - xp.log(xp.maximum(n_eff, 1).astype(log_dtype(xp)))
        corr = xp.broadcast_to(corr, neg_ids.shape)
    elif sampler == "popularity":
        if log_q is None:
            raise ValueError("sampler='popularity' needs log_q (log sampling probabilities)")
        corr = -(math.log(n) + log_q[neg_ids])
    else:
        raise ValueError(f"unknown sampler {sampler!r}")
    return keep, corr


def log_dtype(xp):
    return np.float64 if xp is np else jnp.float32


def sampled_ce_reference(embeddings, classifier, targets, neg_ids, *, num_items: int,
                         sampler: str = "uniform", log_q=None, where=None,
                         reduction: str = "mean"):
    """Plain-JAX CCE- reference (float32 math, differentiable): gathers ``[N, n, D]`` rows.

    ``neg_ids``: int32[N, n] per-row negatives (e.g. ``expand_ids(sampled_negative_ids(...))``).
    Memory is O(N n D): for tests and small problems only.
    """
    e = embeddings.astype(jnp.float32)
    c = classifier.astype(jnp.float32)
    n_rows = e.shape[0]
    where = jnp.ones((n_rows,), bool) if where is None else where.astype(bool)
    t = jnp.where(where, targets, 0).astype(jnp.int32)
    s_pos = jnp.einsum("nd,nd->n", e, c[t])
    s_neg = jnp.einsum("nd,nkd->nk", e, c[neg_ids])
    keep, corr = _corrections(neg_ids, t, num_items, sampler, log_q, jnp)
    s_neg = jnp.where(keep, s_neg + corr, -jnp.inf)
    lse = jnp.logaddexp(s_pos, jax.nn.logsumexp(s_neg, axis=1))
    loss = jnp.where(where, lse - s_pos, 0.0)
    return reduce_rows(loss, where, reduction)


def reduce_rows(loss, where, reduction):
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.sum() / jnp.maximum(where.sum(), 1).astype(loss.dtype)
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def sampled_ce_reference_np(embeddings, classifier, targets, neg_ids, *, num_items: int,
                            sampler: str = "uniform", log_q=None, where=None,
                            reduction: str = "mean"):
    """float64 numpy reference: ``(loss, dE, dC)`` with analytic gradients.

    ``loss`` is a scalar for ``mean``/``sum`` and ``[N]`` for ``none`` (gradients then are of
    ``loss.sum()``).
    """
    e = np.asarray(embeddings, np.float64)
    c = np.asarray(classifier, np.float64)
    neg_ids = np.asarray(neg_ids)
    n_rows = e.shape[0]
    where = np.ones(n_rows, bool) if where is None else np.asarray(where, bool)
    t = np.where(where, np.asarray(targets), 0)
    lq = None if log_q is None else np.asarray(log_q, np.float64)
    keep, corr = _corrections(neg_ids, t, num_items, sampler, lq, np)
    s_pos = np.einsum("nd,nd->n", e, c[t])
    s_neg = np.where(keep, np.einsum("nd,nkd->nk", e, c[neg_ids]) + corr, -np.inf)
    m = np.maximum(s_pos, s_neg.max(axis=1))
    z = np.exp(s_pos - m) + np.exp(s_neg - m[:, None]).sum(axis=1)
    lse = m + np.log(z)
    loss = np.where(where, lse - s_pos, 0.0)
    if reduction == "none":
        scale = where.astype(np.float64)
        out = loss
    elif reduction == "sum":
        scale, out = where.astype(np.float64), loss.sum()
    elif reduction == "mean":
        cnt = max(int(where.sum()), 1)
        scale, out = where / cnt, loss.sum() / cnt
    else:
        raise ValueError(f"unknown reduction {reduction!r}")
    g_pos = (np.exp(s_pos - lse) - 1.0) * scale
    g_neg = np.exp(s_neg - lse[:, None]) * scale[:, None]
    de = g_pos[:, None] * c[t] + np.einsum("nk,nkd->nd", g_neg, c[neg_ids])
    dc = np.zeros_like(c)
    np.add.at(dc, t, g_pos[:, None] * e)
    np.add.at(dc, neg_ids.reshape(-1), (g_neg[:, :, None] * e[:, None, :]).reshape(-1, e.shape[1]))
    return out, de, dc
