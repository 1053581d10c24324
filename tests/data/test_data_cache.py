"""Cache hit, invalidation (config change, file touch), interrupted and corrupted writes."""

import os
import subprocess
import sys
import time

import numpy as np
import polars as pl
import pytest

from srs_jax.data import cache, dataset_config, prepare_dataset, sources, synthetic


def _write(path, seed, n=4000):
    rng = np.random.default_rng(seed)
    pl.DataFrame({"user_id": rng.integers(0, 200, n), "item_id": rng.zipf(1.3, n) % 500,
                  "timestamp": rng.integers(0, 10**6, n)}).write_parquet(path)


@pytest.fixture
def cfg(tmp_path):
    _write(tmp_path / "x.parquet", 0)
    c = dataset_config("generic")
    c.path, c.format, c.cache_dir = str(tmp_path / "x.parquet"), "parquet", str(tmp_path / "cache")
    return c


def _assert_same(a, b):
    assert a.stats == b.stats and a.n_items == b.n_items and a.n_users == b.n_users
    for x, y in [(a.train, b.train), (a.val.inputs, b.val.inputs), (a.test.inputs, b.test.inputs),
                 (a.test_period, b.test_period)]:
        for f in ("offsets", "items", "users"):
            np.testing.assert_array_equal(getattr(x, f), getattr(y, f))
            assert getattr(x, f).dtype == getattr(y, f).dtype
    for f in ("item_raw_ids", "user_raw_ids", "item_counts"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    np.testing.assert_array_equal(a.val.targets, b.val.targets)
    np.testing.assert_array_equal(a.test.targets, b.test.targets)


def _forbid_reading(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("the raw file was read although the cache should hit")

    monkeypatch.setattr(sources, "read_source", fail)


def test_second_run_hits_cache(cfg, monkeypatch):
    first = prepare_dataset(cfg)
    assert len(list((cache.cache_path(cfg)).glob("*.npy"))) > 10
    _forbid_reading(monkeypatch)
    start = time.perf_counter()
    second = prepare_dataset(cfg)
    assert time.perf_counter() - start < 0.5
    _assert_same(first, second)


def test_config_change_and_file_touch_rebuild(cfg, monkeypatch, tmp_path):
    first = prepare_dataset(cfg)
    path_a = cache.cache_path(cfg)
    cfg.min_item_count = 2
    assert cache.cache_path(cfg) != path_a
    changed = prepare_dataset(cfg)
    assert changed.stats["n_interactions"] > first.stats["n_interactions"]
    cfg.min_item_count = 5
    assert cache.cache_path(cfg) == path_a
    # Same content, new mtime: rebuilt (fingerprint changes), result identical.
    st = os.stat(cfg.path)
    os.utime(cfg.path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert cache.cache_path(cfg) != path_a
    _assert_same(prepare_dataset(cfg), first)
    # New content: a different dataset.
    _write(cfg.path, 1)
    assert prepare_dataset(cfg).stats != first.stats
    # Fields that do not affect the data share the cache.
    cfg.source_url = "elsewhere"
    cfg.use_cache = False
    monkeypatch.setattr(cache, "save", lambda *a: pytest.fail("use_cache=False must not write"))
    prepare_dataset(cfg)


def test_synthetic_fingerprint_is_its_config(tmp_path, monkeypatch):
    c = dataset_config("synthetic")
    c.cache_dir = str(tmp_path)
    c.synthetic.n_users, c.synthetic.n_items = 300, 200
    p = cache.cache_path(c)
    c.synthetic.seed = 1
    assert cache.cache_path(c) != p
    c.synthetic.seed = 0
    assert cache.cache_path(c) == p
    # A new generator or pipeline version makes other data from the same config: no old hit.
    with monkeypatch.context() as m:
        m.setattr(synthetic, "GENERATOR_VERSION", synthetic.GENERATOR_VERSION + 1)
        assert cache.cache_path(c) != p
    with monkeypatch.context() as m:
        m.setattr(cache, "CACHE_VERSION", cache.CACHE_VERSION + 1)
        assert cache.cache_path(c) != p
    assert cache.cache_path(c) == p


def test_interrupted_write_leaves_old_cache_usable(cfg, monkeypatch):
    good = prepare_dataset(cfg)
    good_path = cache.cache_path(cfg)
    cfg.min_user_count = 4  # a new dataset whose write crashes half-way
    new_path = cache.cache_path(cfg)
    real_save, calls = np.save, []

    def crashing_save(file, arr, **kw):
        calls.append(file)
        if len(calls) == 5:
            raise KeyboardInterrupt("simulated crash mid-write")
        real_save(file, arr, **kw)

    monkeypatch.setattr(cache.np, "save", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(cfg)
    monkeypatch.setattr(cache.np, "save", real_save)
    assert not new_path.exists()
    assert [p.name for p in new_path.parent.iterdir()] == [good_path.name]  # no temp leftovers
    cfg.min_user_count = 3
    _forbid_reading(monkeypatch)
    _assert_same(prepare_dataset(cfg), good)


def test_killed_writer_leftovers_are_never_loaded(cfg):
    """A hard kill cannot run cleanup: its temporary directory is never loaded, and the next
    writer of the same name deletes it once its process is gone (a live writer's is kept)."""
    path = cache.cache_path(cfg)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = path.parent / f".{path.name}.tmp-{dead.pid}-deadbeef"
    live = path.parent / f".{path.name}.tmp-{os.getpid()}-cafecafe"
    for tmp in (stale, live):
        tmp.mkdir(parents=True)
        (tmp / "train.items.npy").write_bytes(b"partial")
    # Another host's leftovers cannot be checked from here (its pids are not ours): kept.
    other_host = path.parent / f".{path.name}.tmp-otherhost-{dead.pid}-deadbeef"
    other_host.mkdir()
    ds = prepare_dataset(cfg)
    assert cache.load(path) is not None and ds.stats["n_interactions"] > 0
    assert not stale.exists() and live.exists() and other_host.exists()


def test_concurrent_writers_keep_the_first_complete_copy(cfg):
    """Processes (several hosts of one run) that all missed the cache and built it: a later
    writer keeps the copy already in place (a reader may be loading it) and leaves no temporary."""
    path = cache.cache_path(cfg)
    ds = prepare_dataset(cfg)
    first = {f.name: f.stat().st_ino for f in path.iterdir()}
    cache.save(ds, path)
    assert {f.name: f.stat().st_ino for f in path.iterdir()} == first
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []
    _assert_same(cache.load(path), ds)


@pytest.mark.parametrize("damage", ["delete_array", "truncate_array", "bad_meta"])
def test_damaged_cache_is_rebuilt(cfg, damage):
    good = prepare_dataset(cfg)
    path = cache.cache_path(cfg)
    if damage == "delete_array":
        (path / "train.items.npy").unlink()
    elif damage == "truncate_array":
        data = (path / "test.targets.npy").read_bytes()
        (path / "test.targets.npy").write_bytes(data[: len(data) // 2])
    else:
        (path / "meta.json").write_text("{not json")
    assert cache.load(path) is None
    _assert_same(prepare_dataset(cfg), good)
    assert cache.load(path) is not None


def test_string_raw_ids_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    n = 3000
    pl.DataFrame({"user_id": [f"U{u}" for u in rng.integers(0, 150, n)],
                  "item_id": [f"B0{i:06d}" for i in rng.zipf(1.3, n) % 400],
                  "timestamp": rng.integers(0, 10**6, n)}).write_csv(tmp_path / "s.csv")
    c = dataset_config("generic")
    c.path, c.cache_dir = str(tmp_path / "s.csv"), str(tmp_path / "cache")
    first = prepare_dataset(c)
    assert first.item_raw_ids.dtype.kind == "U" and first.item_raw_ids[0] == ""
    _assert_same(first, prepare_dataset(c))


@pytest.mark.parametrize("fmt", ["synthetic", "parquet"])
def test_keys_added_later_change_the_fingerprint_only_when_set(tmp_path, fmt):
    """``time_until`` (None) and ``synthetic.growth`` (0) at their "as before" values give the
    fingerprint of a config written before those keys existed, so old caches still hit."""
    c = dataset_config("synthetic" if fmt == "synthetic" else "generic")
    c.unlock()
    c.cache_dir = str(tmp_path)
    if fmt == "parquet":
        c.format, c.path = "parquet", str(tmp_path / "r.parquet")
        c.columns.user, c.columns.item, c.columns.time = "user_id", "item_id", "timestamp"
        _write(c.path, 3)
    older = dataset_config("synthetic" if fmt == "synthetic" else "generic")
    older.unlock()
    older.update(c.to_dict())
    del older["time_until"]
    del older.synthetic["growth"]
    assert "time_until" not in older and "growth" not in older.synthetic
    assert cache.fingerprint(c) == cache.fingerprint(older)
    c.time_until = 5e5
    assert cache.fingerprint(c) != cache.fingerprint(older)
    c.time_until = None
    c.synthetic.growth = 0.5
    changed = cache.fingerprint(c) != cache.fingerprint(older)
    assert changed == (fmt == "synthetic")  # the generator settings only matter for synthetic data
