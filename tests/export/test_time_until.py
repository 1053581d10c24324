"""``data.time_until``: rows later than it are dropped before the count filters, in any time unit."""

from __future__ import annotations

import types

import numpy as np
import pytest

from srs_jax.data import dataset_config, prepare_dataset
from srs_jax.data.preprocess import count_filter, load_interactions, time_scale
from srs_jax.data.sources import frame_from_arrays
from srs_jax.data.synthetic import generate


def _cfg(**kw):
    base = dict(name="t", format="csv", min_item_count=2, min_user_count=2, min_rating=None,
                event_value=None, time_until=None)
    base.update(kw)
    return types.SimpleNamespace(**base)


def _reference(user, item, time, cutoff, cfg):
    """Sets of raw (user, item) pairs kept: time filter, then the item and user filters."""
    m = time <= cutoff
    u, i = user[m], item[m]
    _, uc = np.unique(u, return_inverse=True)
    _, ic = np.unique(i, return_inverse=True)
    keep = count_filter(uc.astype(np.int64), ic.astype(np.int64), cfg.min_item_count,
                        cfg.min_user_count)
    return u[keep], i[keep]


@pytest.mark.parametrize("scale", [1, 1_000, 1_000_000, 1_000_000_000])
def test_cut_in_every_time_unit(scale):
    rng = np.random.default_rng(scale % 97)
    n = 4000
    user = rng.integers(0, 300, n).astype(np.int64) * 7 + 3  # sparse raw ids
    item = rng.integers(0, 150, n).astype(np.int64) * 5
    seconds = 1_500_000_000 + rng.integers(0, 10**7, n)  # 2017 onwards
    time = seconds.astype(np.int64) * scale + rng.integers(0, scale, n) * (scale > 1)
    until = float(np.quantile(seconds, 0.6)) + 0.5
    cfg = _cfg(time_until=until)
    got = load_interactions(frame_from_arrays(user, item, time).lazy(), cfg)
    ru, ri = _reference(user, item, time, int(np.floor(until * scale)), cfg)
    assert len(got) == len(ru) and 0.4 * n < len(got) < 0.7 * n
    np.testing.assert_array_equal(got.user_raw_ids[got.user], ru)
    np.testing.assert_array_equal(got.item_raw_ids[got.item], ri)
    assert time_scale(time.max()) == scale
    # The filters count after the cut: an item frequent only later is dropped.
    full = load_interactions(frame_from_arrays(user, item, time).lazy(), _cfg())
    assert len(full) > len(got) and full.n_items >= got.n_items


def test_bad_settings_one_line():
    user = np.arange(20) % 4
    item = np.arange(20) % 5
    time = np.arange(20, dtype=np.int64) + 1_600_000_000
    with pytest.raises(ValueError, match=r"no rows at or before config.data.time_until=1000.0"):
        load_interactions(frame_from_arrays(user, item, time).lazy(), _cfg(time_until=1000.0))
    with pytest.raises(ValueError, match="needs a time column, and format 'user_item' has none"):
        load_interactions(frame_from_arrays(user, item, time).lazy(),
                          _cfg(time_until=1.6e9, format="user_item"))


def test_older_snapshot_of_a_growing_synthetic_world(tmp_path):
    def config(until):
        c = dataset_config("synthetic")
        c.unlock()
        c.cache_dir = str(tmp_path)
        s = c.synthetic
        s.n_users, s.n_items, s.mean_gap_s, s.growth = 1200, 400, 3 * 3600.0, 1.0
        c.time_until = until
        return c

    _, _, time = generate(config(None).synthetic)
    until = float(np.quantile(time, 0.7))
    old, new = prepare_dataset(config(until)), prepare_dataset(config(None))
    assert old.n_items < 0.95 * new.n_items and old.n_users < 0.9 * new.n_users
    # Cached separately (time_until is part of the data settings).
    again = prepare_dataset(config(until))
    assert again.n_items == old.n_items
    assert len(set(np.asarray(old.item_raw_ids[1:]).tolist()) - set(np.asarray(new.item_raw_ids[1:]).tolist())) < 0.02 * old.n_items
