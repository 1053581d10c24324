"""Seeded synthetic interactions with learnable sequential structure (the embedded default).

Model of a user (all users are simulated together, one vectorised step per sequence position,
so the Python loop runs ``max_length`` times, never once per user):

* items ``0..n_items-1`` have Zipf popularity ``(rank + 1) ** -zipf_exponent`` (item 0 the most
  popular) and a latent cluster (uniform at random);
* every item has ``n_successors`` successor items drawn by popularity from its own cluster;
* a user starts in a random cluster (by cluster popularity); at each step, with probability
  ``p_follow`` the next item is a random successor of the previous item, otherwise the user
  switches cluster with probability ``p_switch`` and draws an item of the current cluster by
  popularity.

So the next item is far more predictable from the previous one than from popularity alone.
Lengths are log-normal with mean ``mean_length``, clipped to ``[min_length, max_length]``;
timestamps (int64 seconds) start uniformly in ``[0, time_span_s)`` and increase by exponential
gaps of mean ``mean_gap_s``. Memory: int32 items, int64 times, one row per interaction.
"""

from __future__ import annotations

import numpy as np
import polars as pl


def _lengths(cfg, rng: np.random.Generator) -> np.ndarray:
    sigma = float(cfg.length_sigma)
    mu = np.log(max(cfg.mean_length, 1.0)) - sigma**2 / 2  # log-normal with the requested mean
    lengths = np.rint(rng.lognormal(mu, sigma, size=cfg.n_users))
    return np.clip(lengths, cfg.min_length, cfg.max_length).astype(np.int64)


class _ClusterSampler:
    """Draws items of given clusters by popularity (one searchsorted for a whole vector)."""

    def __init__(self, cluster: np.ndarray, weight: np.ndarray, n_clusters: int):
        order = np.argsort(cluster, kind="stable")
        self.items = order.astype(np.int32)
        self.cum = np.cumsum(weight[order])
        sizes = np.bincount(cluster, minlength=n_clusters)
        ends = np.cumsum(sizes)
        self.lo = np.r_[0.0, self.cum][ends - sizes]
        self.mass = np.r_[0.0, self.cum][ends] - self.lo
        self.cluster_cum = np.cumsum(self.mass)

    def draw(self, clusters: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = self.lo[clusters] + rng.random(len(clusters)) * self.mass[clusters]
        pos = np.minimum(np.searchsorted(self.cum, x, side="right"), len(self.cum) - 1)
        return self.items[pos]

    def draw_clusters(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n clusters drawn by their popularity mass."""
        x = rng.random(n) * self.cluster_cum[-1]
        return np.minimum(np.searchsorted(self.cluster_cum, x, side="right"),
                          len(self.cluster_cum) - 1)


def generate(cfg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user int32[N], item int32[N], time int64[N]), rows grouped by user, in time order."""
    if cfg.n_users < 1 or cfg.n_items < 2 or cfg.n_clusters < 1 or cfg.n_successors < 1:
        raise ValueError("config.data.synthetic needs n_users >= 1, n_items >= 2, n_clusters >= 1 "
                         "and n_successors >= 1")
    if not (0 <= cfg.p_follow <= 1 and 0 <= cfg.p_switch <= 1):
        raise ValueError("config.data.synthetic.p_follow and p_switch must be in [0, 1]")
    rng = np.random.default_rng(cfg.seed)
    n_clusters = min(cfg.n_clusters, cfg.n_items)
    weight = (np.arange(1, cfg.n_items + 1, dtype=np.float64)) ** -float(cfg.zipf_exponent)
    cluster = rng.integers(0, n_clusters, size=cfg.n_items)
    cluster[:n_clusters] = np.arange(n_clusters)  # no empty cluster
    sampler = _ClusterSampler(cluster, weight, n_clusters)
    successors = sampler.draw(np.repeat(cluster, cfg.n_successors), rng).reshape(
        cfg.n_items, cfg.n_successors)
    item_cluster = cluster.astype(np.int32)
    del cluster, weight

    lengths = _lengths(cfg, rng)
    # Longest users first: the users active at step t are a prefix of this order.
    by_length = np.argsort(-lengths, kind="stable")
    sorted_len = lengths[by_length]
    offsets = np.r_[0, np.cumsum(lengths)]
    start = offsets[:-1][by_length]  # output position of step 0 of each (sorted) user
    n_total = int(offsets[-1])
    items = np.empty(n_total, np.int32)
    times = np.empty(n_total, np.int64)

    n_active = len(by_length)
    state = sampler.draw_clusters(n_active, rng)
    prev = sampler.draw(state, rng)
    clock = rng.random(n_active) * float(cfg.time_span_s)
    for t in range(int(sorted_len[0]) if n_active else 0):
        n_active = int(np.searchsorted(-sorted_len, -t, side="left"))  # users with length > t
        if n_active == 0:
            break
        state, prev, clock = state[:n_active], prev[:n_active], clock[:n_active]
        if t > 0:
            # Only the users that need a draw pay for it (searchsorted dominates the cost).
            follows = rng.random(n_active) < cfg.p_follow
            follow, fresh = np.flatnonzero(follows), np.flatnonzero(~follows)
            switch = fresh[rng.random(len(fresh)) < cfg.p_switch]
            state[switch] = sampler.draw_clusters(len(switch), rng)
            prev[fresh] = sampler.draw(state[fresh], rng)
            succ = successors[prev[follow], rng.integers(0, cfg.n_successors, size=len(follow))]
            prev[follow] = succ
            state[follow] = item_cluster[succ]
            clock = clock + rng.exponential(float(cfg.mean_gap_s), size=n_active) + 1.0
        pos = start[:n_active] + t
        items[pos] = prev
        times[pos] = clock.astype(np.int64)
    user = np.repeat(np.arange(cfg.n_users, dtype=np.int32), lengths)
    return user, items, times


def generate_frame(cfg) -> pl.DataFrame:
    """``generate`` as a source frame ``(user, item, time, row)``."""
    from srs_jax.data.sources import frame_from_arrays

    return frame_from_arrays(*generate(cfg))
