"""Raw data files and the prepared-data cache: each bad file is one error naming the file and the
config field to fix (checked in process: a subprocess adds nothing here but start-up time)."""

from __future__ import annotations

import gzip
import os

import numpy as np
import polars as pl
import pytest

from srs_jax.data import cache, dataset_config, prepare_dataset
from srs_jax.data.sources import DataFileError
from srs_jax.training import cli
from tests.faults import harness


def _config(path, fmt="csv", tmp=None, **over):
    c = dataset_config("generic")
    c.path, c.format = str(path), fmt
    c.columns.user, c.columns.item, c.columns.time = "user", "item", "time"
    c.cache_dir = str(tmp or os.path.dirname(path)) + "/cache"
    c.min_item_count, c.min_user_count = 1, 1
    for k, v in over.items():
        setattr(c, k, v)
    return c


def _frame(rng, n=300):
    return pl.DataFrame({"user": rng.integers(0, 20, n), "item": rng.integers(0, 40, n),
                         "time": np.sort(rng.integers(10**9, 2 * 10**9, n))})


def _one_line(error: BaseException, *needles: str) -> str:
    line = cli.describe(error)
    assert "\n" not in line and "Traceback" not in line
    for needle in needles:
        assert needle in line, (needle, line)
    harness.record("error: " + line)
    return line


def _fails(cfg, *needles):
    with pytest.raises((ValueError, OSError)) as info:
        prepare_dataset(cfg)
    return _one_line(info.value, *needles)


@pytest.fixture
def rng():
    return np.random.default_rng(3)


def test_missing_file(tmp_path):
    line = _fails(_config(tmp_path / "nope.csv"), "nope.csv", "not found", "config.data.path")
    assert "download" not in line  # a generic file has nowhere to download from


def test_empty_csv(tmp_path):
    (tmp_path / "a.csv").write_bytes(b"")
    _fails(_config(tmp_path / "a.csv"), "a.csv", "is empty")


def test_blank_csv(tmp_path):
    (tmp_path / "a.csv").write_text("\n\n  \n")
    _fails(_config(tmp_path / "a.csv"), "a.csv", "holds no data")


def test_header_only_csv(tmp_path):
    (tmp_path / "a.csv").write_text("user,item,time\n")
    _fails(_config(tmp_path / "a.csv"), "a.csv", "no data rows")


def test_parquet_read_as_csv(tmp_path, rng):
    _frame(rng).write_parquet(tmp_path / "a.csv")
    line = _fails(_config(tmp_path / "a.csv"), "a.csv", "is a parquet file",
                  "config.data.format='parquet'")
    assert len(line) < 400  # no binary "column names"


def test_parquet_under_a_txt_name_read_as_user_item(tmp_path, rng):
    _frame(rng).write_parquet(tmp_path / "a.txt")
    _fails(_config(tmp_path / "a.txt", "user_item"), "a.txt", "parquet")


def test_csv_read_as_parquet(tmp_path, rng):
    _frame(rng).write_csv(tmp_path / "a.parquet")
    _fails(_config(tmp_path / "a.parquet", "parquet"), "a.parquet", "not a parquet file")


def test_binary_file_read_as_csv(tmp_path, rng):
    (tmp_path / "a.csv").write_bytes(rng.integers(0, 256, 5000).astype(np.uint8).tobytes())
    _fails(_config(tmp_path / "a.csv"), "a.csv", "not UTF-8 text")


def test_binary_file_read_as_user_items(tmp_path, rng):
    (tmp_path / "a.txt").write_bytes(b"1 2 3\n" + bytes(range(256)) * 10)
    _fails(_config(tmp_path / "a.txt", "user_items"), "a.txt", "not UTF-8 text")


def test_non_date_string_in_the_time_column(tmp_path):
    (tmp_path / "a.csv").write_text("user,item,time\n1,2,2020-01-01\n1,3,yesterday\n2,2,2020-01-02\n")
    _fails(_config(tmp_path / "a.csv", time_format="%Y-%m-%d"), "a.csv", "time_format")


def test_wrong_column_names(tmp_path, rng):
    _frame(rng).rename({"user": "uid"}).write_csv(tmp_path / "a.csv")
    _fails(_config(tmp_path / "a.csv"), "a.csv", "config.data.columns.user='user'", "uid")


def test_wrong_separator(tmp_path, rng):
    _frame(rng).write_csv(tmp_path / "a.csv", separator="\t")
    _fails(_config(tmp_path / "a.csv"), "a.csv", "config.data.columns.user")


def test_float_ids(tmp_path, rng):
    _frame(rng).with_columns(pl.col("item").cast(pl.Float64) + 0.5).write_csv(tmp_path / "a.csv")
    _fails(_config(tmp_path / "a.csv"), "ids must be integers or strings")


def test_text_rating_column_with_a_rating_filter(tmp_path, rng):
    _frame(rng).with_columns(pl.lit("good").alias("rating")).write_csv(tmp_path / "a.csv")
    cfg = _config(tmp_path / "a.csv", min_rating=3.0)
    cfg.columns.rating = "rating"
    _fails(cfg, "rating", "not numeric")


def test_gz_name_on_a_plain_file(tmp_path, rng):
    (tmp_path / "a.csv.gz").write_text(_frame(rng).write_csv())
    _fails(_config(tmp_path / "a.csv.gz"), "a.csv.gz", "not gzip-compressed")


def test_gzip_file_without_gz_name(tmp_path, rng):
    (tmp_path / "a.csv").write_bytes(gzip.compress(_frame(rng).write_csv().encode()))
    _fails(_config(tmp_path / "a.csv"), "a.csv", "rename it to end in .gz")


def test_damaged_gzip_file(tmp_path):
    (tmp_path / "a.csv.gz").write_bytes(b"\x1f\x8b\x08\x00" + b"\xff" * 200)
    _fails(_config(tmp_path / "a.csv.gz"), "a.csv.gz", "damaged gzip")


def test_all_rows_filtered_out(tmp_path, rng):
    _frame(rng).write_csv(tmp_path / "a.csv")
    _fails(_config(tmp_path / "a.csv", min_item_count=10**6), "min_item_count")


def test_unknown_format(tmp_path, rng):
    _frame(rng).write_csv(tmp_path / "a.csv")
    with pytest.raises(ValueError) as info:
        prepare_dataset(_config(tmp_path / "a.csv", "xlsx"))
    _one_line(info.value, "xlsx")


def test_good_csv_and_gz_read(tmp_path, rng):
    frame = _frame(rng)
    frame.write_csv(tmp_path / "a.csv")
    (tmp_path / "b.csv.gz").write_bytes(gzip.compress(frame.write_csv().encode()))
    a = prepare_dataset(_config(tmp_path / "a.csv"))
    b = prepare_dataset(_config(tmp_path / "b.csv.gz", tmp=tmp_path / "other"))
    assert a.n_items == b.n_items and np.array_equal(a.train.items, b.train.items)


# ----------------------------------------------------------------------------- the cache

def _cached(tmp_path, rng):
    _frame(rng, 600).write_csv(tmp_path / "a.csv")
    cfg = _config(tmp_path / "a.csv")
    ds = prepare_dataset(cfg)
    return cfg, ds, cache.cache_path(cfg)


def _flip_same_size(path):
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01  # inside the array data: the .npy header still parses
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["flip", "truncate", "meta"])
def test_corrupted_cache_is_named_and_rebuilt(tmp_path, rng, caplog, how):
    cfg, ds, path = _cached(tmp_path, rng)
    target = path / "train.items.npy"
    if how == "flip":
        size = target.stat().st_size
        _flip_same_size(target)
        assert target.stat().st_size == size
    elif how == "truncate":
        target.write_bytes(target.read_bytes()[:-8])
    else:
        target = path / "meta.json"
        target.write_text("{")
    with caplog.at_level("WARNING"):
        again = prepare_dataset(cfg)
    assert str(target) in caplog.text or str(path) in caplog.text
    harness.record("warning: " + caplog.records[-1].getMessage())
    if how == "flip":
        assert "checksum mismatch" in caplog.text
    assert np.array_equal(again.train.items, ds.train.items)
    assert cache.load(path) is not None  # rebuilt in place


def test_cache_that_cannot_be_written_is_skipped(tmp_path, rng, caplog, monkeypatch):
    _frame(rng).write_csv(tmp_path / "a.csv")
    cfg = _config(tmp_path / "a.csv")

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save", full)
    with caplog.at_level("WARNING"):
        ds = prepare_dataset(cfg)
    assert ds.n_items > 0 and "No space left on device" in caplog.text and "cache" in caplog.text
