"""The data modules of this package read their config only by attribute and ``.to_dict()``, so
they run unchanged on a frozen spec (checked with a frozen stand-in that has nothing else)."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest

from srs_jax.data import cache, dataset, dataset_config, prepare_dataset


def frozen(tree: dict):
    """A frozen dataclass instance with the fields of ``tree`` (nested dicts become nested
    instances) and ``to_dict()``; no item access, ``get`` or ``in``."""
    fields = {k: frozen(v) if isinstance(v, dict) else v for k, v in tree.items()}
    cls = dataclasses.make_dataclass(
        "FrozenSpec", list(fields), frozen=True,
        namespace={"to_dict": lambda self: {k: (getattr(self, k).to_dict()
                                                if hasattr(getattr(self, k), "to_dict") else
                                                getattr(self, k)) for k in fields}})
    return cls(**fields)


@pytest.fixture
def no_configdict_checks(monkeypatch):
    monkeypatch.setattr(dataset, "validate_config", lambda cfg: None)  # owned by srs_jax.config


@pytest.mark.parametrize("use_cache", [False, True])
def test_synthetic_from_a_frozen_spec(tmp_path, no_configdict_checks, use_cache):
    c = dataset_config("synthetic")
    c.synthetic.n_users, c.synthetic.n_items = 150, 60
    c.cache_dir, c.use_cache = str(tmp_path), use_cache
    spec = frozen(c.to_dict())
    a, b = prepare_dataset(c), prepare_dataset(spec)
    assert a.n_items == b.n_items and np.array_equal(a.train.items, b.train.items)
    assert cache.fingerprint(spec) == cache.fingerprint(c)


def test_csv_from_a_frozen_spec(tmp_path, no_configdict_checks):
    rng = np.random.default_rng(0)
    pl.DataFrame({"u": rng.integers(0, 30, 400), "i": rng.integers(0, 50, 400),
                  "t": rng.integers(0, 10**6, 400), "r": rng.uniform(0, 5, 400)}
                 ).write_csv(tmp_path / "x.csv")
    c = dataset_config("generic")
    c.path, c.format, c.cache_dir, c.min_rating = str(tmp_path / "x.csv"), "csv", str(tmp_path), 1.0
    c.columns.user, c.columns.item, c.columns.time, c.columns.rating = "u", "i", "t", "r"
    c.min_item_count = c.min_user_count = 1
    c.use_cache = False  # both read the file through sources
    a = prepare_dataset(c)
    b = prepare_dataset(frozen(c.to_dict()))
    assert a.n_items == b.n_items and np.array_equal(a.test.targets, b.test.targets)
