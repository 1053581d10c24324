"""Seeded synthetic interactions with learnable sequential structure (the embedded default).

Model of a user (all users are simulated together, one vectorised step per sequence position,
so the Python loop runs ``max_length`` times, never once per user):

* items are split at random into ``n_clusters`` latent clusters of (nearly) equal size; inside a
  cluster, items have power-law popularity ``rank ** -zipf_exponent`` (drawn in O(1) by the
  inverse CDF of the continuous power law, so the whole catalog is Zipf-like by rank);
* every item has ``n_successors`` successor items drawn by popularity from its own cluster;
* a user starts in a uniformly random cluster; at each step, with probability ``p_follow`` the
  next item is a random successor of the previous item, otherwise the user switches to a random
  cluster with probability ``p_switch`` and draws an item of the current cluster by popularity.

So the next item is far more predictable from the previous one than from popularity alone.
Lengths are log-normal with mean ``mean_length``, clipped to ``[min_length, max_length]``;
timestamps (int64 seconds) start uniformly in ``[0, time_span_s)`` and increase by exponential
gaps of mean ``mean_gap_s``. Memory: int32 items, int64 times, one row per interaction.

A growing world (``growth`` in (0, 1]; optional key, 0 or absent = the static world above, same
output as without the key): every item gets a release time uniform in ``[0, growth *
time_span_s)`` (the most popular item of each cluster is out at time 0), a user never meets an
item before its release (the draw is repeated, up to 8 times, then the cluster's most popular
item is taken), and start times are drawn with density rising over time (``time_span_s * u **
(1 / (1 + growth))``), so later periods have more users. Cutting the data at an earlier time
(``data.time_until``) then gives an older snapshot with fewer items and fewer users. Its extra
draws come from a second generator seeded by ``(seed, 1)``.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from srs_jax.data.frames import frame_from_arrays

# Part of the cache fingerprint of synthetic data: bump whenever the generated data change.
GENERATOR_VERSION = 2


def _lengths(cfg, rng: np.random.Generator) -> np.ndarray:
    sigma = float(cfg.length_sigma)
    mu = np.log(max(cfg.mean_length, 1.0)) - sigma**2 / 2  # log-normal with the requested mean
    lengths = np.rint(rng.lognormal(mu, sigma, size=cfg.n_users))
    return np.clip(lengths, cfg.min_length, cfg.max_length).astype(np.int64)


class _ClusterSampler:
    """Draws items of given clusters by within-cluster power-law popularity, O(1) per draw.

    Cluster ``c`` holds ``items[start[c]:start[c] + size[c]]``, most popular first."""

    def __init__(self, n_items: int, n_clusters: int, exponent: float, rng: np.random.Generator):
        self.items = rng.permutation(n_items).astype(np.int32)
        bounds = (np.arange(n_clusters + 1, dtype=np.int64) * n_items) // n_clusters
        self.start, self.size = bounds[:-1], np.diff(bounds)
        self.cluster = np.empty(n_items, np.int32)  # cluster of each item id
        self.cluster[self.items] = np.repeat(np.arange(n_clusters, dtype=np.int32), self.size)
        self.n_clusters = n_clusters
        self.exponent = float(exponent)

    def draw(self, clusters: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        m = self.size[clusters].astype(np.float64)
        u = rng.random(len(clusters))
        a = self.exponent
        # Inverse CDF of density x ** -a on [1, m + 1), floored: P(rank = k) ~ k ** -a.
        if abs(a - 1.0) < 1e-9:
            x = np.exp(u * np.log1p(m))
        else:
            x = (1.0 + u * ((m + 1.0) ** (1.0 - a) - 1.0)) ** (1.0 / (1.0 - a))
        rank = np.clip(x.astype(np.int64), 1, m.astype(np.int64))
        return self.items[self.start[clusters] + rank - 1]

    def draw_clusters(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(0, self.n_clusters, size=n)


class _Releases:
    """Release times of a growing world and the redraw of items met before their release."""

    ROUNDS = 8

    def __init__(self, sampler: _ClusterSampler, growth: float, span: float, seed: int):
        self.rng = np.random.default_rng([int(seed), 1])
        self.sampler = sampler
        self.time = self.rng.random(len(sampler.items)) * (growth * span)
        self.first = sampler.items[sampler.start]  # most popular item of each cluster
        self.time[self.first] = 0.0

    def released(self, items: np.ndarray, clusters: np.ndarray, clock: np.ndarray) -> np.ndarray:
        """``items`` with each one not yet released at ``clock`` redrawn from its cluster."""
        items = items.copy()
        bad = np.flatnonzero(self.time[items] > clock)
        for _ in range(self.ROUNDS):
            if not len(bad):
                return items
            items[bad] = self.sampler.draw(clusters[bad], self.rng)
            bad = bad[self.time[items[bad]] > clock[bad]]
        items[bad] = self.first[clusters[bad]]
        return items


def generate(cfg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user int32[N], item int32[N], time int64[N]), rows grouped by user, in time order."""
    growth = float(cfg.growth)
    if not 0.0 <= growth <= 1.0:
        raise ValueError(f"config.data.synthetic.growth={growth} must be in [0, 1] (0 = static world)")
    if cfg.n_users < 1 or cfg.n_items < 2 or cfg.n_clusters < 1 or cfg.n_successors < 1:
        raise ValueError("config.data.synthetic needs n_users >= 1, n_items >= 2, n_clusters >= 1 "
                         "and n_successors >= 1")
    if not (0 <= cfg.p_follow <= 1 and 0 <= cfg.p_switch <= 1):
        raise ValueError("config.data.synthetic.p_follow and p_switch must be in [0, 1]")
    if cfg.zipf_exponent < 0:
        raise ValueError(f"config.data.synthetic.zipf_exponent={cfg.zipf_exponent} must be >= 0")
    rng = np.random.default_rng(cfg.seed)
    n_clusters = min(cfg.n_clusters, cfg.n_items)
    sampler = _ClusterSampler(cfg.n_items, n_clusters, cfg.zipf_exponent, rng)
    item_cluster = sampler.cluster
    successors = np.empty((cfg.n_items, cfg.n_successors), np.int32)
    step = max(1, (1 << 23) // cfg.n_successors)  # chunks of 8M draws: bounded temporaries
    for lo in range(0, cfg.n_items, step):
        block = item_cluster[lo:lo + step]
        successors[lo:lo + step] = sampler.draw(np.repeat(block, cfg.n_successors), rng).reshape(
            len(block), cfg.n_successors)

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
    if growth:
        releases = _Releases(sampler, growth, float(cfg.time_span_s), cfg.seed)
        clock = rng.random(n_active) ** (1.0 / (1.0 + growth)) * float(cfg.time_span_s)
    else:
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
        if growth:
            prev = releases.released(prev, state, clock)
        pos = start[:n_active] + t
        items[pos] = prev
        times[pos] = clock.astype(np.int64)
    user = np.repeat(np.arange(cfg.n_users, dtype=np.int32), lengths)
    return user, items, times


def generate_frame(cfg) -> pl.DataFrame:
    """``generate`` as a source frame ``(user, item, time, row)``."""
    return frame_from_arrays(*generate(cfg))
