"""Readers of every raw format, on small random fixture files written with the real column
names and types, compared with numpy expectations; and every reader error."""

import datetime as dt
import gzip

import numpy as np
import polars as pl
import pytest

from srs_jax.data import dataset_config
from srs_jax.data.sources import read_source


def _cfg(name, path):
    cfg = dataset_config(name)
    cfg.path = str(path)
    return cfg


def _collect(cfg):
    df = read_source(cfg).collect()
    assert df.columns == ["user", "item", "time", "row"]
    assert df["time"].dtype == pl.Int64
    return df


def _check(df, keep, users, items, times):
    """Rows ``keep`` of the fixture, in file order, with times ordered like ``times``."""
    rows = np.flatnonzero(keep)
    np.testing.assert_array_equal(df["row"].to_numpy(), rows)
    np.testing.assert_array_equal(df["user"].to_numpy(), np.asarray(users)[rows])
    np.testing.assert_array_equal(df["item"].to_numpy(), np.asarray(items)[rows])
    got, want = df["time"].to_numpy(), np.asarray(times)[rows]
    # Only the order matters: same ranking, ties included.
    np.testing.assert_array_equal(np.argsort(got, kind="stable"), np.argsort(want, kind="stable"))
    np.testing.assert_array_equal(got[:, None] == got[None, :], want[:, None] == want[None, :])


@pytest.fixture
def rng(request):
    return np.random.default_rng(abs(hash(request.node.name)) % 2**32)


def _base(rng, n=None):
    n = n or int(rng.integers(50, 120))
    return n, rng.integers(1, 40, n), rng.integers(1, 300, n)


def test_movielens_csv(tmp_path, rng):
    n, users, items = _base(rng)
    ratings = rng.choice([0.5, 1.0, 2.5, 3.0, 3.5, 4.0, 5.0], n)
    times = rng.integers(789_000_000, 1_427_000_000, n)
    pl.DataFrame({"userId": users, "movieId": items, "rating": ratings,
                  "timestamp": times}).write_csv(tmp_path / "ratings.csv")
    df = _collect(_cfg("movielens_20m", tmp_path / "ratings.csv"))
    _check(df, ratings > 3, users, items, times)  # rating 3 is dropped, 3.5 kept


def test_beauty_csv_gz_string_ids(tmp_path, rng):
    n, users, items = _base(rng)
    users = np.array([f"AG{u:05d}XYZ" for u in users])
    items = np.array([f"B0{i:07d}" for i in items])
    ratings = rng.integers(1, 6, n).astype(float)
    times = rng.integers(1_000_000_000_000, 1_700_000_000_000, n)  # milliseconds
    with gzip.open(tmp_path / "Beauty_and_Personal_Care.csv.gz", "wt") as f:
        f.write(pl.DataFrame({"user_id": users, "parent_asin": items, "rating": ratings,
                              "timestamp": times}).write_csv())
    df = _collect(_cfg("beauty", tmp_path / "Beauty_and_Personal_Care.csv.gz"))
    assert df["user"].dtype == pl.String and df["item"].dtype == pl.String
    _check(df, ratings > 3, users, items, times)


def _datetimes(rng, n):
    base = dt.datetime(2023, 1, 15)
    return [base + dt.timedelta(seconds=int(s), microseconds=int(m))
            for s, m in zip(rng.integers(0, 10**7, n), rng.integers(0, 10**6, n))]


def test_zvuk_parquet(tmp_path, rng):
    n, users, items = _base(rng)
    times = _datetimes(rng, n)
    times[1] = times[0]  # a tie
    pl.DataFrame({"user_id": users.astype(np.int32), "session_id": rng.integers(0, 9, n),
                  "datetime": times, "track_id": items.astype(np.int32),
                  "play_duration": rng.integers(-5, 300, n)}).write_parquet(
        tmp_path / "zvuk-interactions.parquet")
    df = _collect(_cfg("zvuk", tmp_path / "zvuk-interactions.parquet"))
    _check(df, np.ones(n, bool), users, items, np.array(times, dtype="datetime64[us]"))


def test_megamarket_parquet_keeps_purchases(tmp_path, rng):
    n, users, items = _base(rng)
    events = rng.integers(0, 4, n)
    times = _datetimes(rng, n)
    pl.DataFrame({"user_id": users, "datetime": times, "event": events, "item_id": items,
                  "category_id": rng.integers(0, 5, n), "price": rng.random(n)}).write_parquet(
        tmp_path / "megamarket.parquet")
    df = _collect(_cfg("megamarket", tmp_path / "megamarket.parquet"))
    _check(df, events == 2, users, items, np.array(times, dtype="datetime64[us]"))


def test_30music_parquet(tmp_path, rng):
    n, users, items = _base(rng)
    times = rng.integers(1_300_000_000, 1_400_000_000, n)
    pl.DataFrame({"user_id": users, "item_id": items, "playtime": rng.integers(0, 500, n),
                  "timestamp": times}).write_parquet(tmp_path / "interactions.parquet")
    _check(_collect(_cfg("30music", tmp_path / "interactions.parquet")), np.ones(n, bool),
           users, items, times)


def test_gowalla_parquet_with_nulls(tmp_path, rng):
    n, users, items = _base(rng)
    times = _datetimes(rng, n)
    loc = [int(i) for i in items]
    loc[3] = None  # rows with a null id are dropped
    pl.DataFrame({"userId": users, "locationId": loc, "relevant": np.ones(n, np.int8),
                  "checkInTime": times}).write_parquet(tmp_path / "interactions.parquet")
    keep = np.ones(n, bool)
    keep[3] = False
    _check(_collect(_cfg("gowalla", tmp_path / "interactions.parquet")), keep, users, items,
           np.array(times, dtype="datetime64[us]"))


def test_gowalla_snap_txt_gz(tmp_path, rng):
    n, users, items = _base(rng)
    times = [t.replace(microsecond=0) for t in _datetimes(rng, n)]
    with gzip.open(tmp_path / "loc-gowalla_totalCheckins.txt.gz", "wt") as f:
        for u, t, i in zip(users, times, items):
            f.write(f"{u}\t{t:%Y-%m-%dT%H:%M:%SZ}\t30.2{i}\t-97.7{u}\t{i}\n")
    df = _collect(_cfg("gowalla_snap", tmp_path / "loc-gowalla_totalCheckins.txt.gz"))
    _check(df, np.ones(n, bool), users, items, np.array(times, dtype="datetime64[s]"))


def test_sasrec_user_item_txt(tmp_path, rng):
    lengths = rng.integers(1, 9, 12)
    users = np.repeat(np.arange(1, 13), lengths)
    items = rng.integers(1, 500, len(users))
    seps = rng.choice([" ", "\t", "  "], len(users))  # blanks of any kind separate fields
    (tmp_path / "Video.txt").write_text(
        "".join(f"{u}{s}{i}\n" for u, i, s in zip(users, items, seps)) + "\n")
    df = _collect(_cfg("amazon_video_games", tmp_path / "Video.txt"))
    assert df["item"].dtype == pl.Int64
    _check(df, np.ones(len(users), bool), users, items, np.arange(len(users)))


def test_s3rec_user_items_txt_string_ids(tmp_path, rng):
    lines, users, items = [], [], []
    for u in range(1, 15):
        seq = [f"i{x}" for x in rng.integers(1, 80, int(rng.integers(1, 10)))]
        lines.append(" ".join([f"u{u}"] + seq) + " \n")  # trailing space as in some files
        users += [f"u{u}"] * len(seq)
        items += seq
    (tmp_path / "Sports.txt").write_text("".join(lines) + "\n")
    df = _collect(_cfg("amazon_sports", tmp_path / "Sports.txt"))
    _check(df, np.ones(len(users), bool), users, items, np.arange(len(users)))


@pytest.mark.parametrize("sep", [",", "\t"])
def test_generic_delimited_with_string_time(tmp_path, rng, sep):
    n, users, items = _base(rng)
    times = _datetimes(rng, n)
    pl.DataFrame({"uid": users, "sku": items, "when": [f"{t:%Y-%m-%d %H:%M:%S.%f}" for t in times]}
                 ).write_csv(tmp_path / "log.tsv", separator=sep)
    cfg = _cfg("generic", tmp_path / "log.tsv")
    cfg.separator = "\\t" if sep == "\t" else sep
    cfg.columns.user, cfg.columns.item, cfg.columns.time = "uid", "sku", "when"
    cfg.time_format = "%Y-%m-%d %H:%M:%S%.f"
    _check(_collect(cfg), np.ones(n, bool), users, items, np.array(times, dtype="datetime64[us]"))


def test_categorical_and_enum_ids_read_as_strings(tmp_path, rng):
    n, users, items = _base(rng)
    users, items = np.array([f"u{u}" for u in users]), np.array([f"i{i}" for i in items])
    times = rng.integers(0, 10**9, n)
    pl.DataFrame({"user_id": pl.Series(users).cast(pl.Categorical),
                  "item_id": pl.Series(items).cast(pl.Enum(sorted(set(items)))),
                  "timestamp": times}).write_parquet(tmp_path / "c.parquet")
    cfg = _cfg("generic", tmp_path / "c.parquet")
    cfg.format = "parquet"
    df = _collect(cfg)
    assert df["user"].dtype == pl.String and df["item"].dtype == pl.String
    _check(df, np.ones(n, bool), users, items, times)


def test_generic_parquet_float_time(tmp_path, rng):
    n, users, items = _base(rng)
    times = rng.random(n) * 1e9
    pl.DataFrame({"user_id": users, "item_id": items, "timestamp": times}).write_parquet(
        tmp_path / "x.parquet")
    cfg = _cfg("generic", tmp_path / "x.parquet")
    cfg.format = "parquet"
    _check(_collect(cfg), np.ones(n, bool), users, items, np.round(times * 1000))


# ------------------------------------------------------------------------------- errors
def test_gz_or_plain_variant_is_found(tmp_path):
    from srs_jax.data.sources import raw_path

    (tmp_path / "Beauty_and_Personal_Care.csv").write_text("user_id,parent_asin,rating,timestamp\n")
    cfg = _cfg("beauty", tmp_path / "Beauty_and_Personal_Care.csv.gz")
    assert raw_path(cfg) == tmp_path / "Beauty_and_Personal_Care.csv"
    (tmp_path / "x.txt.gz").write_bytes(gzip.compress(b"1\t2010-10-19T23:55:27Z\t1.0\t2.0\t3\n"))
    assert raw_path(_cfg("gowalla_snap", tmp_path / "x.txt")) == tmp_path / "x.txt.gz"
    # End to end, cached: the fingerprint is taken from the file actually read.
    from srs_jax.data import prepare_dataset

    rows = [(f"U{u}", f"B{i}", "5.0", str(1000 + k)) for k, (u, i) in enumerate(
        [(u, i) for u in range(8) for i in range(6)])]
    (tmp_path / "Beauty_and_Personal_Care.csv").write_text(
        "user_id,parent_asin,rating,timestamp\n" + "".join(",".join(r) + "\n" for r in rows))
    cfg.cache_dir, cfg.split = str(tmp_path / "cache"), "leave_one_out"
    assert prepare_dataset(cfg).stats["n_interactions"] == 48
    assert prepare_dataset(cfg).stats["n_test_users"] == 8  # second call: cache hit


def test_missing_file_names_path_and_download(tmp_path):
    cfg = _cfg("zvuk", tmp_path / "nope" / "zvuk-interactions.parquet")
    with pytest.raises(FileNotFoundError, match=r"zvuk: raw file .*nope/zvuk-interactions.parquet "
                                                r"not found: download it from .*kaggle.*zvuk"):
        read_source(cfg)
    with pytest.raises(FileNotFoundError, match="config.data.path is not set"):
        read_source(dataset_config("generic"))


def test_missing_column_names_found_and_key(tmp_path):
    pl.DataFrame({"user_id": [1], "item_id": [2], "ts": [3]}).write_parquet(tmp_path / "i.parquet")
    cfg = _cfg("30music", tmp_path / "i.parquet")
    with pytest.raises(ValueError, match=r"has columns \['user_id', 'item_id', 'ts'\]; expected "
                                         r"config.data.columns.time='timestamp'"):
        read_source(cfg)
    # A rating filter needs its column.
    pl.DataFrame({"userId": [1], "movieId": [2], "timestamp": [3]}).write_csv(tmp_path / "r.csv")
    with pytest.raises(ValueError, match=r"config.data.columns.rating='rating'"):
        read_source(_cfg("movielens_20m", tmp_path / "r.csv"))


def test_mistyped_columns(tmp_path):
    pl.DataFrame({"user_id": [1.5], "item_id": [2], "timestamp": [3]}).write_parquet(
        tmp_path / "f.parquet")
    cfg = _cfg("30music", tmp_path / "f.parquet")
    cfg.columns.item = "item_id"
    with pytest.raises(ValueError, match=r"column 'user_id' \(config.data.columns.user\) has "
                                         r"type Float64; ids must be integers or strings"):
        read_source(cfg)
    pl.DataFrame({"user_id": [1], "item_id": [2], "timestamp": [True]}).write_parquet(
        tmp_path / "b.parquet")
    with pytest.raises(ValueError, match=r"time column 'timestamp' has type Boolean.*"
                                         r"config.data.columns.time"):
        read_source(_cfg("30music", tmp_path / "b.parquet"))
    pl.DataFrame({"userId": [1], "movieId": [2], "rating": ["good"], "timestamp": [3]}).write_csv(
        tmp_path / "r.csv")
    with pytest.raises(ValueError, match=r"rating column 'rating' has type String, not numeric"):
        read_source(_cfg("movielens_20m", tmp_path / "r.csv"))


def test_bad_format_and_separator(tmp_path):
    (tmp_path / "x.csv").write_text("user_id,item_id,timestamp\n1,2,3\n")
    cfg = _cfg("generic", tmp_path / "x.csv")
    cfg.format = "xlsx"
    with pytest.raises(ValueError, match=r"config.data.format='xlsx' is unknown"):
        read_source(cfg)
    cfg.format, cfg.separator = "csv", ";;"
    with pytest.raises(ValueError, match="separator=';;' must be one character"):
        read_source(cfg)
