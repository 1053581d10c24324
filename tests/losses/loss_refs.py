"""float64 numpy references for the losses (given fixed negatives / bucket selections)."""

import numpy as np


def logsumexp(x, axis=-1):
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return (m + np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))).squeeze(axis)


def log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


def masked_mean(row, where):
    return np.where(where, row, 0.0).sum() / max(where.sum(), 1)


def ce(h, c, y, where):
    y0 = np.where(where, y, 0)
    logits = h @ c.T
    return masked_mean(logsumexp(logits) - logits[np.arange(len(y0)), y0], where)


def expand(neg, n_rows):
    return np.broadcast_to(neg, (n_rows, neg.shape[1])) if neg.shape[0] == 1 else neg


def ce_neg(h, c, y, where, neg, *, sampler="uniform", counts=None):
    n_items, n = c.shape[0], neg.shape[1]
    neg = expand(neg, h.shape[0])
    y0 = np.where(where, y, 0)
    pos = np.sum(h * c[y0], axis=1)
    s = np.einsum("nh,nkh->nk", h, c[neg])
    keep = neg != y0[:, None]
    if sampler == "uniform":
        corr = np.log(n_items - 1) - np.log(np.maximum(keep.sum(1, keepdims=True), 1))
    else:
        q = counts / counts.sum()
        corr = -np.log(n * q[neg])
    s = np.where(keep, s + corr, -np.inf)
    lse = logsumexp(np.concatenate([pos[:, None], s], axis=1))
    return masked_mean(lse - pos, where)


def binary(h, c, y, where, neg, *, beta=1.0):
    neg = expand(neg, h.shape[0])
    y0 = np.where(where, y, 0)
    pos = np.sum(h * c[y0], axis=1)
    s = np.einsum("nh,nkh->nk", h, c[neg])
    return masked_mean(-(beta * log_sigmoid(pos) + log_sigmoid(-s).sum(1)), where)


def sce_select(h, c, where, omega_or_centres, *, mix_x, size_x, size_y):
    """Bucket rows and items (the non-differentiable part), by full argsort."""
    x0 = h * where[:, None]
    centres = omega_or_centres.T @ x0 if mix_x else omega_or_centres
    rs = np.where(where[None, :], centres @ x0.T, -np.inf)
    rows = np.argsort(-rs, axis=1, kind="stable")[:, :size_x]
    items = np.argsort(-(centres @ c.T), axis=1, kind="stable")[:, :size_y]
    return rows, items


def sce(h, c, y, where, rows, items):
    y0 = np.where(where, y, 0)
    correct = np.sum(h * c[y0], axis=1)
    logits = np.einsum("bxh,byh->bxy", h[rows], c[items])
    logits = np.where(items[:, None, :] == y0[rows][:, :, None], -np.inf, logits)
    lse = logsumexp(np.concatenate([logits, correct[rows][..., None]], axis=-1))
    val = np.where(where[rows], lse - correct[rows], -np.inf)
    best = np.full(h.shape[0], -np.inf)
    np.maximum.at(best, rows.ravel(), val.ravel())
    sel = np.isfinite(best)
    return best[sel].sum() / max(sel.sum(), 1)


def fd_grads(f, arrays, eps=1e-6):
    """Central finite differences of scalar ``f(*arrays)`` w.r.t. each float64 array."""
    grads = []
    for i, a in enumerate(arrays):
        g = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            plus = [x.copy() for x in arrays]
            minus = [x.copy() for x in arrays]
            plus[i][idx] += eps
            minus[i][idx] -= eps
            g[idx] = (f(*plus) - f(*minus)) / (2 * eps)
        grads.append(g)
    return grads


def compute(cfg: dict, hidden, classifier, labels, where, *, key, item_counts=None):
    """The loss of spec fields ``cfg`` built for ``classifier``'s catalog and applied once."""
    from srs_jax.config import LossSpec
    from srs_jax.losses import build_loss

    loss = build_loss(LossSpec(**cfg), n_items=classifier.shape[0], item_counts=item_counts)
    return loss(hidden, classifier, labels, where, key=key)


def negative_ids(cfg: dict, key, n_rows, n_items, *, labels=None, where=None, item_counts=None):
    """The negatives the loss of ``cfg`` draws from ``key`` (``[n_rows, n]``, ``[1, n]`` shared)."""
    from srs_jax.config import LossSpec
    from srs_jax.losses import build_loss

    loss = build_loss(LossSpec(**cfg), n_items=n_items, item_counts=item_counts)
    return loss.negative_ids(key, n_rows, labels, where)
