"""The synthetic generator: seeded, well-formed, and with structure a sequence model can learn."""

import numpy as np
import pytest

from srs_jax.data import dataset_config, prepare_dataset
from srs_jax.data.synthetic import generate


def _cfg(**kw):
    cfg = dataset_config("synthetic").synthetic
    for k, v in kw.items():
        cfg[k] = v
    return cfg


@pytest.mark.parametrize("n_users,n_items,mean_length", [(1, 2, 1.0), (37, 11, 4.0), (800, 3000, 25.0)])
def test_shapes_order_and_bounds(n_users, n_items, mean_length):
    cfg = _cfg(n_users=n_users, n_items=n_items, mean_length=mean_length, min_length=2,
               max_length=60, n_clusters=7)
    user, item, time = generate(cfg)
    assert user.dtype == np.int32 and item.dtype == np.int32 and time.dtype == np.int64
    assert len(user) == len(item) == len(time)
    assert np.all(np.diff(user) >= 0) and set(np.unique(user)) == set(range(n_users))
    lengths = np.bincount(user, minlength=n_users)
    assert lengths.min() >= 2 and lengths.max() <= 60
    assert item.min() >= 0 and item.max() < n_items
    same_user = np.diff(user) == 0
    assert np.all(np.diff(time)[same_user] > 0)  # strictly increasing within a user
    if n_users >= 800:
        assert abs(lengths.mean() - mean_length) < 0.1 * mean_length
        assert lengths.std() > 5  # varied lengths


def test_seeded():
    a = generate(_cfg(n_users=300, n_items=500))
    b = generate(_cfg(n_users=300, n_items=500))
    c = generate(_cfg(n_users=300, n_items=500, seed=1))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert len(a[1]) != len(c[1]) or not np.array_equal(a[1], c[1])


@pytest.mark.parametrize("exponent", [0.7, 1.0, 1.3])
def test_zipf_popularity(exponent):
    _, item, _ = generate(_cfg(n_users=3000, n_items=2000, p_follow=0.0, n_clusters=1,
                               zipf_exponent=exponent))
    counts = np.sort(np.bincount(item, minlength=2000))[::-1].astype(float)
    # One cluster, no successors: items are drawn by rank ** -exponent. Fit the log-log slope
    # over ranks 5..200 (the continuous inverse CDF is exact up to O(1/rank^2) there).
    ranks = np.arange(5, 201)
    slope = np.polyfit(np.log(ranks), np.log(counts[ranks - 1]), 1)[0]
    assert abs(slope + exponent) < 0.15, slope
    flat = np.bincount(generate(_cfg(n_users=3000, n_items=200, p_follow=0.0, n_clusters=1,
                                     zipf_exponent=0.0))[1], minlength=200)
    assert flat.min() > 0.6 * flat.mean()  # exponent 0: uniform


def test_next_item_beats_popularity(tmp_path):
    """A bigram model fitted on the training split predicts the test targets far better than
    the most popular items: the structure is learnable and the split keeps it."""
    cfg = dataset_config("synthetic")
    cfg.cache_dir, cfg.use_cache = str(tmp_path), False
    cfg.synthetic.n_users, cfg.synthetic.n_items = 3000, 1500
    ds = prepare_dataset(cfg)
    assert ds.stats["n_test_users"] > 100 and ds.stats["n_val_users"] > 100
    v = ds.n_items + 1
    src, dst = [], []
    for r in range(len(ds.train)):
        s = ds.train.row(r)
        src.append(s[:-1])
        dst.append(s[1:])
    pair = np.bincount(np.concatenate(src).astype(np.int64) * v + np.concatenate(dst),
                       minlength=v * v).reshape(v, v)
    last = ds.test.inputs.items[ds.test.inputs.offsets[1:] - 1]
    bigram_top = np.argsort(-pair[last], axis=1)[:, :10]
    pop_top = np.argsort(-ds.item_counts)[:10]
    hit_bigram = np.mean([t in row for t, row in zip(ds.test.targets, bigram_top)])
    hit_pop = np.mean(np.isin(ds.test.targets, pop_top))
    assert hit_bigram > 0.6 and hit_bigram > 1.5 * hit_pop, (hit_bigram, hit_pop)


def test_bad_settings():
    with pytest.raises(ValueError, match="n_items >= 2"):
        generate(_cfg(n_items=1))
    with pytest.raises(ValueError, match="p_follow and p_switch must be in"):
        generate(_cfg(p_follow=1.5))
    with pytest.raises(ValueError, match="zipf_exponent=-1.0 must be >= 0"):
        generate(_cfg(zipf_exponent=-1.0))


DEFAULT_DIGEST = "d50899ac59382678df8012d00880c5fcfa181dfcbf8ac3805b699021d7b1a771"


def test_default_output_unchanged_and_growth_zero_is_static():
    """The default data (and so every cached default dataset) is what GENERATOR_VERSION 2 made;
    growth = 0 is the same world as no growth key."""
    import hashlib

    cfg = _cfg()
    digest = hashlib.sha256(b"".join(a.tobytes() for a in generate(cfg))).hexdigest()
    assert digest == DEFAULT_DIGEST
    cfg.unlock()
    cfg.growth = 0.0
    assert hashlib.sha256(b"".join(a.tobytes() for a in generate(cfg))).hexdigest() == DEFAULT_DIGEST


def _growing(growth, **kw):
    cfg = _cfg(n_users=1500, n_items=600, mean_gap_s=3 * 3600.0, **kw)
    cfg.unlock()
    cfg.growth = growth
    return cfg


def test_growing_world_releases_items_and_users_over_time():

    user, item, time = generate(_growing(1.0))
    cut = np.quantile(time, 0.7)
    early = time <= cut
    # An older snapshot has clearly fewer items and users, and the newest items are met late.
    n_items, n_early_items = len(np.unique(item)), len(np.unique(item[early]))
    n_users, n_early_users = len(np.unique(user)), len(np.unique(user[early]))
    assert n_early_items < 0.93 * n_items and n_early_users < 0.85 * n_users
    first_seen = np.full(600, np.inf)
    np.minimum.at(first_seen, item, time)
    seen = np.isfinite(first_seen)
    assert np.corrcoef(np.arange(600)[seen], first_seen[seen])[0, 1] < 0.2  # ids are not time order
    # Static world with the same settings: (almost) every item is out early.
    user0, item0, time0 = generate(_growing(0.0))
    early0 = time0 <= np.quantile(time0, 0.7)
    assert len(np.unique(item0[early0])) > n_early_items
    first_seen0 = np.full(600, np.inf)
    np.minimum.at(first_seen0, item0, time0)
    assert np.median(first_seen[seen]) > 3 * np.median(first_seen0[np.isfinite(first_seen0)])
    # Still well formed and seeded.
    assert np.all(np.diff(user) >= 0) and np.all(np.diff(time)[np.diff(user) == 0] > 0)
    for a, b in zip(generate(_growing(1.0)), (user, item, time)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="growth=1.5 must be in"):
        generate(_growing(1.5))
