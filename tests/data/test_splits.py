"""Filters, both split protocols and item encoding against hand-computed examples and a plain
Python re-statement of the protocols (dicts and loops, independent of the numpy code)."""

import math

import ml_collections
import numpy as np
import polars as pl
import pytest

from srs_jax.data import dataset_config, prepare_dataset
from srs_jax.data.preprocess import count_filter, load_interactions
from srs_jax.data.splits import split_dataset

# The hand example of the docstrings: (user, item, time); rows 8 and 9 tie at time 9.
HAND_ROWS = [("a", "x", 1), ("a", "y", 2), ("b", "x", 3), ("c", "y", 4), ("b", "z", 5),
             ("c", "x", 6), ("d", "y", 7), ("d", "x", 8), ("a", "z", 9), ("b", "w", 9),
             ("e", "x", 10), ("a", "x", 11)]


def _write_csv(path, rows, names=("user_id", "item_id", "timestamp")):
    cols = list(zip(*rows))
    pl.DataFrame({n: list(c) for n, c in zip(names, cols)}).write_csv(path)
    return path


def _cfg(path, tmp_path, **overrides):
    cfg = dataset_config("generic")
    cfg.path = str(path)
    cfg.cache_dir = str(tmp_path / "cache")
    cfg.use_cache = False
    cfg.min_item_count = 1
    cfg.min_user_count = 1
    for k, v in overrides.items():
        cfg[k] = v
    return cfg


def _decode(ds, seqs):
    """{raw user: [raw items]} of a Sequences."""
    return {ds.user_raw_ids[u]: list(ds.item_raw_ids[seqs.row(r)]) for r, u in enumerate(seqs.users)}


def _decode_eval(ds, split):
    inputs = _decode(ds, split.inputs)
    return {ds.user_raw_ids[u]: (inputs[ds.user_raw_ids[u]], ds.item_raw_ids[t])
            for u, t in zip(split.users, split.targets)}


def test_global_temporal_hand_example(tmp_path):
    path = _write_csv(tmp_path / "hand.csv", HAND_ROWS)
    # With 4 pre-threshold users (a, b, c, d) and fraction 0.25 exactly one is a validation
    # user; seed 4 picks c (asserted below), so everything else follows by hand.
    cfg = _cfg(path, tmp_path, time_quantile=0.75, val_user_fraction=0.25, seed=4)
    ds = prepare_dataset(cfg)
    # t* = time at sorted position floor(12 * 0.75) = 9: rows 0..7 are pre-threshold.
    assert ds.stats["time_threshold"] == 9
    assert _decode_eval(ds, ds.val) == {"c": (["y"], "x")}
    # Items by first appearance in training rows (a x, a y, b x, b z, d y, d x); w untrained.
    assert list(ds.item_raw_ids) == ["", "x", "y", "z"]
    assert ds.n_items == 3 and ds.n_users == 5
    assert _decode(ds, ds.train) == {"a": ["x", "y"], "b": ["x", "z"], "d": ["y", "x"]}
    # b's only post row has the cold item w; e has one warm row (nothing to hold out).
    assert _decode_eval(ds, ds.test) == {"a": (["x", "y", "z"], "x")}
    assert _decode(ds, ds.test_period) == {"a": ["x", "y", "z"]}
    np.testing.assert_array_equal(ds.item_counts, [0, 3, 2, 1])
    assert ds.stats == dict(
        name="generic", split="global_temporal", n_users=5, n_items=4, n_interactions=12,
        catalog_size=3, n_train_users=3, n_train_interactions=6, n_val_users=1, n_test_users=1,
        time_threshold=9, n_test_period_users=1)


def test_leave_one_out_hand_example(tmp_path):
    path = _write_csv(tmp_path / "hand.csv", HAND_ROWS)
    ds = prepare_dataset(_cfg(path, tmp_path, split="leave_one_out"))
    # Training rows in time order give x, y; then z, w occur only as targets.
    assert list(ds.item_raw_ids) == ["", "x", "y", "z", "w"]
    assert _decode(ds, ds.train) == {"a": ["x", "y"], "b": ["x"], "c": ["y", "x"],
                                     "d": ["y", "x"], "e": ["x"]}
    assert _decode_eval(ds, ds.val) == {"a": (["x", "y"], "z"), "b": (["x"], "z")}
    assert _decode_eval(ds, ds.test) == {"a": (["x", "y", "z"], "x"), "b": (["x", "z"], "w")}
    np.testing.assert_array_equal(ds.item_counts, [0, 5, 3, 0, 0])
    assert (ds.stats["n_train_users"], ds.stats["n_val_users"], ds.stats["n_test_users"],
            ds.stats["n_train_interactions"]) == (5, 2, 2, 8)


# ---------------------------------------------------------------- plain-Python reference
def ref_filter(rows, min_item, min_user):
    item_n = {}
    for _, i, _ in rows:
        item_n[i] = item_n.get(i, 0) + 1
    rows = [r for r in rows if item_n[r[1]] >= min_item]
    user_n = {}
    for u, _, _ in rows:
        user_n[u] = user_n.get(u, 0) + 1
    return [r for r in rows if user_n[r[0]] >= min_user]


def _by_user(rows):
    """{user: [(time, order, item)]} sorted by (time, original order)."""
    out = {}
    for k, (u, i, t) in enumerate(rows):
        out.setdefault(u, []).append((t, k, i))
    return {u: sorted(v) for u, v in out.items()}


def ref_global_temporal(rows, q, frac, seed):
    order = sorted(range(len(rows)), key=lambda k: (rows[k][2], k))
    t_star = rows[order[math.floor(len(rows) * q)]][2]
    pre = [rows[k] for k in order if rows[k][2] < t_star]
    pre_users = list(dict.fromkeys(u for u, _, _ in pre))
    perm = np.random.default_rng(seed).permutation(len(pre_users))
    n_train = math.floor((1 - frac) * len(pre_users) + 0.5)
    val_users = {pre_users[p] for p in perm[n_train:]}
    train = [r for r in pre if r[0] not in val_users]
    enc = list(dict.fromkeys(i for _, i, _ in train))
    warm = set(enc)
    seen_pre = {i for _, i, _ in pre}
    test_users = {u for u, i, t in rows if t >= t_star and i in seen_pre} - val_users
    train_seq = {u: [i for _, _, i in v] for u, v in _by_user(train).items()}
    val_seq = _by_user([r for r in rows if r[0] in val_users and r[2] < t_star and r[1] in warm])
    val = {u: ([i for *_, i in v[:-1]], v[-1][2]) for u, v in val_seq.items() if len(v) >= 2}
    t_seq = _by_user([r for r in rows if r[0] in test_users and r[1] in warm])
    period = {u: ([i for *_, i in v[:-1]], v[-1][2]) for u, v in t_seq.items() if len(v) >= 2}
    test = {u: v for u, v in period.items() if u in train_seq}
    return t_star, enc, train_seq, val, test, {u: v[0] for u, v in period.items()}


def ref_leave_one_out(rows):
    seqs = _by_user(rows)
    train, val, test = {}, {}, {}
    for u, v in seqs.items():
        items = [i for *_, i in v]
        if len(items) >= 3:
            train[u], val[u], test[u] = items[:-2], (items[:-2], items[-2]), (items[:-1], items[-1])
        else:
            train[u] = items
    train_rows = sorted((t, k, i) for u, v in seqs.items() for t, k, i in v[:len(train[u])])
    all_rows = sorted((t, k, i) for v in seqs.values() for t, k, i in v)
    enc = list(dict.fromkeys([i for *_, i in train_rows] + [i for *_, i in all_rows]))
    return enc, train, val, test


def _random_rows(rng, n_rows, n_users, n_items, n_times):
    users = rng.integers(0, n_users, n_rows) * 7 + 100  # sparse raw ids
    items = rng.zipf(1.3, n_rows) % n_items + 1000
    times = rng.integers(0, n_times, n_rows)  # many ties
    return [(int(u), int(i), int(t)) for u, i, t in zip(users, items, times)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_global_temporal_matches_reference(tmp_path, seed):
    rng = np.random.default_rng(seed)
    n_rows = int(rng.integers(1500, 4000))
    rows = _random_rows(rng, n_rows, int(rng.integers(40, 200)), int(rng.integers(50, 400)), 300)
    path = _write_csv(tmp_path / "r.csv", rows)
    q, frac = float(rng.uniform(0.6, 0.95)), float(rng.uniform(0.05, 0.3))
    cfg = _cfg(path, tmp_path, min_item_count=5, min_user_count=3, time_quantile=q,
               val_user_fraction=frac, seed=seed + 10)
    ds = prepare_dataset(cfg)
    kept = ref_filter(rows, 5, 3)
    t_star, enc, train, val, test, period = ref_global_temporal(kept, q, frac, seed + 10)
    assert ds.stats["n_interactions"] == len(kept)
    assert ds.stats["time_threshold"] == t_star
    assert list(ds.item_raw_ids[1:]) == enc
    assert _decode(ds, ds.train) == train
    assert _decode_eval(ds, ds.val) == val
    assert _decode_eval(ds, ds.test) == test
    assert _decode(ds, ds.test_period) == period
    counts = {}
    for items in train.values():
        for i in items:
            counts[i] = counts.get(i, 0) + 1
    assert list(ds.item_counts) == [0] + [counts[i] for i in enc]
    # Properties: validation users never train; test targets come after the threshold
    # unless the user's post-threshold items were all untrained (reference edge case).
    assert not set(ds.val.users) & set(ds.train.users)
    assert not set(ds.val.users) & set(ds.test_period.users)
    assert set(ds.test.users) <= set(ds.train.users)
    post = {(u, i) for u, i, t in kept if t >= t_star}
    late = [(ds.user_raw_ids[u], ds.item_raw_ids[t]) in post
            for u, t in zip(ds.test.users, ds.test.targets)]
    assert np.mean(late) > 0.9
    for split in (ds.train, ds.val.inputs, ds.test.inputs, ds.test_period):
        assert split.items.dtype == np.int32 and split.offsets.dtype == np.int64
        assert split.items.min() >= 1 and split.items.max() <= ds.n_items
        assert np.all(np.diff(split.users) > 0)


@pytest.mark.parametrize("seed", [3, 4])
def test_leave_one_out_matches_reference(tmp_path, seed):
    rng = np.random.default_rng(seed)
    rows = _random_rows(rng, int(rng.integers(1000, 3000)), 150, 200, 50)
    path = _write_csv(tmp_path / "r.csv", rows)
    ds = prepare_dataset(_cfg(path, tmp_path, split="leave_one_out", min_item_count=2,
                              min_user_count=2))
    enc, train, val, test = ref_leave_one_out(ref_filter(rows, 2, 2))
    assert list(ds.item_raw_ids[1:]) == enc
    assert _decode(ds, ds.train) == train
    assert _decode_eval(ds, ds.val) == val
    assert _decode_eval(ds, ds.test) == test
    assert ds.stats["n_val_users"] == ds.stats["n_test_users"] == len(test)


def test_count_filter_matches_reference():
    rng = np.random.default_rng(5)
    user = rng.integers(0, 60, 3000).astype(np.int32)
    item = (rng.zipf(1.2, 3000) % 300).astype(np.int32)
    rows = [(int(u), int(i), k) for k, (u, i) in enumerate(zip(user, item))]
    for min_item, min_user in [(5, 3), (1, 1), (10, 40), (0, 0)]:
        keep = count_filter(user, item, min_item, min_user)
        expected = {k for _, _, k in ref_filter(rows, min_item, min_user)}
        assert set(np.flatnonzero(keep)) == expected
    # Single pass: after the user filter some items may fall below the item threshold.
    keep = count_filter(user, item, 5, 40)
    assert np.bincount(item[keep]).max() > 0


def test_split_is_deterministic_and_seeded(tmp_path):
    rng = np.random.default_rng(6)
    path = _write_csv(tmp_path / "r.csv", _random_rows(rng, 3000, 150, 100, 200))
    a = prepare_dataset(_cfg(path, tmp_path, seed=1))
    b = prepare_dataset(_cfg(path, tmp_path, seed=1))
    c = prepare_dataset(_cfg(path, tmp_path, seed=2))
    for x, y in [(a.train, b.train), (a.val.inputs, b.val.inputs), (a.test.inputs, b.test.inputs)]:
        for f in ("offsets", "items", "users"):
            np.testing.assert_array_equal(getattr(x, f), getattr(y, f))
    assert set(a.val.users) != set(c.val.users)


def test_empty_after_filtering_error(tmp_path):
    path = _write_csv(tmp_path / "r.csv", HAND_ROWS)
    with pytest.raises(ValueError, match=r"no interactions left after filtering.*lower "
                                         r"config.data.min_item_count"):
        prepare_dataset(_cfg(path, tmp_path, min_item_count=50))


def test_too_few_users_errors(tmp_path):
    path = _write_csv(tmp_path / "r.csv", HAND_ROWS)
    with pytest.raises(ValueError, match=r"too few users.*no validation user.*val_user_fraction"):
        prepare_dataset(_cfg(path, tmp_path, time_quantile=0.75, val_user_fraction=0.0))
    with pytest.raises(ValueError, match=r"too few users.*no test user.*time_quantile"):
        # Only the new user d is active after the threshold: it has no training history.
        rows = [(u, i, t) for t, (u, i) in enumerate(
            [("a", "x"), ("a", "y"), ("b", "x"), ("b", "y"), ("c", "x"), ("c", "y"),
             ("d", "x"), ("d", "y")])]
        new_only = _write_csv(tmp_path / "new.csv", rows)
        prepare_dataset(_cfg(new_only, tmp_path, time_quantile=0.75, val_user_fraction=0.34))
    two = _write_csv(tmp_path / "two.csv", [("a", "x", 1), ("a", "y", 2), ("b", "x", 3)])
    with pytest.raises(ValueError, match=r"leave_one_out.*no user has 3\+ interactions"):
        prepare_dataset(_cfg(two, tmp_path, split="leave_one_out"))


def test_config_errors(tmp_path):
    path = _write_csv(tmp_path / "r.csv", HAND_ROWS)
    with pytest.raises(ValueError, match="config.data.split='random' is invalid: use one of"):
        prepare_dataset(_cfg(path, tmp_path, split="random"))
    with pytest.raises(ValueError, match=r"time_quantile=1.5 is invalid: must be in \(0, 1\)"):
        prepare_dataset(_cfg(path, tmp_path, time_quantile=1.5))
    with pytest.raises(ValueError, match="config.data.name='movielens' is unknown: use one of"):
        dataset_config("movielens")
    cfg = dataset_config("zvuk")
    with pytest.raises(AttributeError, match="min_item_cnt"):
        cfg.min_item_cnt = 3
    with pytest.raises(TypeError):
        cfg.min_item_count = "five"


def test_split_dataset_on_interactions_directly(tmp_path):
    """``split_dataset`` needs only ``Interactions``; unfiltered input keeps every row."""
    path = _write_csv(tmp_path / "r.csv", HAND_ROWS)
    cfg = _cfg(path, tmp_path, split="leave_one_out")
    from srs_jax.data.sources import read_source

    x = load_interactions(read_source(cfg), cfg)
    assert len(x) == 12 and x.n_users == 5 and x.n_items == 4
    assert x.user.dtype == np.int32 and x.item.dtype == np.int32 and x.time.dtype == np.int64
    ds = split_dataset(x, ml_collections.ConfigDict(dict(cfg)))
    assert ds.stats["n_test_users"] == 2


def test_sparse_and_compact_integer_ids_encode_alike(tmp_path):
    """Compact integer ids take an O(N) lookup, sparse ones a sort: same encoded result."""
    rng = np.random.default_rng(8)
    rows = _random_rows(rng, 3000, 120, 300, 500)
    sparse = [(u * 10**9 + 7, -i * 10**10, t) for u, i, t in rows]  # huge, negative ids
    a = prepare_dataset(_cfg(_write_csv(tmp_path / "a.csv", rows), tmp_path))
    b = prepare_dataset(_cfg(_write_csv(tmp_path / "b.csv", sparse), tmp_path))
    assert a.stats == b.stats
    np.testing.assert_array_equal(a.user_raw_ids * 10**9 + 7, b.user_raw_ids)
    np.testing.assert_array_equal(-a.item_raw_ids[1:] * 10**10, b.item_raw_ids[1:])
    for x, y in [(a.train, b.train), (a.test.inputs, b.test.inputs)]:
        np.testing.assert_array_equal(x.items, y.items)
        np.testing.assert_array_equal(x.offsets, y.offsets)


def test_prefix_mask_matches_python():
    """Ragged rows, empty rows, zero and full prefixes, dropped rows."""
    from srs_jax.data.splits import _prefix_mask

    rng = np.random.default_rng(11)
    for _ in range(300):
        lengths = rng.integers(0, 6, int(rng.integers(1, 30)))
        offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
        keep = rng.random(len(lengths)) < 0.7
        prefix = np.array([rng.integers(0, n + 1) for n in lengths])
        want = [pos < (p if k else 0) for n, p, k in zip(lengths, prefix, keep) for pos in range(n)]
        np.testing.assert_array_equal(_prefix_mask(offsets, keep, prefix), np.array(want, bool))


def test_remaining_bad_input_errors(tmp_path):
    same_time = _write_csv(tmp_path / "t.csv", [(u, i, 5) for u, i, _ in HAND_ROWS])
    with pytest.raises(ValueError, match=r"no interaction before the 0.9 time quantile \(all at "
                                         r"time 5\); lower config.data.time_quantile"):
        prepare_dataset(_cfg(same_time, tmp_path))
    # One pre-threshold user, drawn as the validation user: nobody is left to train on.
    lone = _write_csv(tmp_path / "l.csv", [("a", "x", 1), ("a", "y", 2), ("b", "x", 5),
                                           ("b", "y", 6)])
    with pytest.raises(ValueError, match=r"too few users.*no training user.*val_user_fraction"):
        prepare_dataset(_cfg(lone, tmp_path, time_quantile=0.5, val_user_fraction=0.6))
    with pytest.raises(ValueError, match=r"val_user_fraction=1.0 is invalid: must be in \[0, 1\)"):
        prepare_dataset(_cfg(lone, tmp_path, val_user_fraction=1.0))
    with pytest.raises(ValueError, match=r"min_user_count=-1 is invalid: must be >= 0"):
        prepare_dataset(_cfg(lone, tmp_path, min_user_count=-1))
    # A rating filter that keeps nothing.
    ratings = tmp_path / "ratings.csv"
    pl.DataFrame({"userId": [1, 2], "movieId": [3, 4], "rating": [1.0, 3.0],
                  "timestamp": [10, 11]}).write_csv(ratings)
    cfg = dataset_config("movielens_20m")
    cfg.path, cfg.use_cache = str(ratings), False
    with pytest.raises(ValueError, match=r"no rows after the rating/event filters \(min_rating="
                                         r"3.0, event_value=None\)"):
        prepare_dataset(cfg)
