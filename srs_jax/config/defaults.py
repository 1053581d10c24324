"""Default run configs (``ml_collections.ConfigDict``) built from the spec defaults.

``run_config(dataset)`` is every field of a run with the reference system's defaults (SASRec,
Adam 1e-3); ``configs/base.py`` documents each field. ``dataset_config(name)`` is the (locked)
``config.data`` of a known dataset, ``dataset_defaults(name)`` the same as a plain dict.

``config.data`` fields (``srs_jax.config.specs.DataSpec``):

* ``name``: dataset name (one of ``DATASETS``); used in the cache directory name and messages.
* ``path``: the raw file (``~`` is expanded). Relative paths are relative to the working directory.
  ``None`` for ``synthetic``.
* ``format``: how ``path`` is read: ``csv`` (delimited text with a header; ``.gz`` allowed),
  ``parquet``, ``snap_gowalla`` (SNAP check-ins, no header), ``user_item`` (``user item`` per
  line, lines in time order: SASRec/BERT4Rec files), ``user_items`` (``user item1 item2 ...`` per
  line: S3-Rec files), ``synthetic``.
* ``separator``: field separator for ``csv`` (``","``; ``"\\t"`` for TSV).
* ``columns.user / item / time``: raw column names. ``columns.rating`` / ``columns.event``:
  optional columns used only by the row filters below (``None`` = not read).
* ``time_format``: strptime format for a string time column (``None`` = let polars infer).
* ``time_until``: Unix seconds; rows later than it are dropped before any filter (``None`` = keep
  all), so one raw file can serve as an older snapshot.
* ``min_rating``: keep rows with ``rating > min_rating`` (``None`` = no rating filter).
* ``event_value``: keep rows with ``event == event_value`` (``None`` = no event filter).
* ``min_item_count`` (5) / ``min_user_count`` (3): the reference filters, one pass each, counting
  rows: items with fewer rows are dropped, then users with fewer rows.
* ``split``: ``global_temporal`` (reference protocol) or ``leave_one_out``.
* ``time_quantile`` (0.9): global_temporal threshold = time of the interaction at this quantile.
* ``val_user_fraction`` (0.05): share of pre-threshold users held out as validation users.
* ``seed`` (42): validation-user sampling seed.
* ``cache_dir`` (``~/.cache/srs_jax``): where prepared datasets are cached; ``use_cache``
  (True): set False to always rebuild (nothing is read or written).
* ``source_url``: where the raw file is downloaded (shown when the file is missing).
* ``synthetic``: generator settings (``srs_jax.data.synthetic``): ``n_users``, ``n_items``,
  ``mean_length``, ``min_length``, ``max_length``, ``length_sigma`` (log-normal spread),
  ``zipf_exponent``, ``n_clusters``, ``n_successors``, ``p_follow`` (next item = a successor of
  the previous one), ``p_switch`` (change latent cluster), ``mean_gap_s`` (seconds between a
  user's interactions), ``time_span_s`` (range of user start times), ``seed``.
"""

from __future__ import annotations

import dataclasses
import typing

import ml_collections
from ml_collections import config_dict

from srs_jax.config import names
from srs_jax.config.specs import ConfigError, DataSpec, RunSpec

DATASETS = names.DATASETS

_REFERENCE_ZIPS = "the Yandex-disk archive linked from github.com/On-Point-RND/MemoryEfficientSRS"

# name -> (path, format, columns, source_url, overrides of the DataSpec defaults)
_SOURCES = {
    "movielens_20m": (
        "data/ml-20m/ratings.csv", "csv",
        dict(user="userId", item="movieId", time="timestamp", rating="rating"),
        "https://files.grouplens.org/datasets/movielens/ml-20m.zip (file ml-20m/ratings.csv)",
        dict(min_rating=3.0),
    ),
    "beauty": (
        "data/amazon2023/Beauty_and_Personal_Care.csv.gz", "csv",
        dict(user="user_id", item="parent_asin", time="timestamp", rating="rating"),
        "https://amazon-reviews-2023.github.io (benchmark, 5-core, rating_only: "
        "Beauty_and_Personal_Care.csv.gz)",
        dict(min_rating=3.0),
    ),
    "zvuk": (
        "data/zvuk/zvuk-interactions.parquet", "parquet",
        dict(user="user_id", item="track_id", time="datetime"),
        "https://www.kaggle.com/datasets/alexxl/zvuk-dataset (file zvuk-interactions.parquet)",
        {},
    ),
    "megamarket": (
        "data/megamarket/megamarket.parquet", "parquet",
        dict(user="user_id", item="item_id", time="datetime", event="event"),
        "https://www.kaggle.com/datasets/alexxl/megamarket (file megamarket.parquet)",
        dict(event_value=2),
    ),
    "30music": (
        "data/30music/interactions.parquet", "parquet",
        dict(user="user_id", item="item_id", time="timestamp"),
        f"{_REFERENCE_ZIPS} (30music.zip -> 30music/interactions.parquet)",
        {},
    ),
    "gowalla": (
        "data/gowalla/interactions.parquet", "parquet",
        dict(user="userId", item="locationId", time="checkInTime"),
        f"{_REFERENCE_ZIPS} (gowalla.zip -> gowalla/interactions.parquet)",
        {},
    ),
    "gowalla_snap": (
        "data/gowalla/loc-gowalla_totalCheckins.txt.gz", "snap_gowalla",
        dict(user="user", item="location_id", time="check_in_time"),
        "https://snap.stanford.edu/data/loc-gowalla.html (loc-gowalla_totalCheckins.txt.gz)",
        {},
    ),
    "amazon_sports": (
        "data/amazon_sports_s3rec.txt", "user_items",
        dict(user="user", item="item", time="row"),
        "https://github.com/aHuiWang/CIKM2020-S3Rec (data/Sports_and_Outdoors.txt)",
        # Already 5-core; published leave-one-out numbers use the file as is.
        dict(split="leave_one_out", min_item_count=1, min_user_count=1),
    ),
    "amazon_video_games": (
        "data/amazon_video_games_sasrec.txt", "user_item",
        dict(user="user", item="item", time="row"),
        "https://github.com/kang205/SASRec (data/Video.txt)",
        dict(split="leave_one_out", min_item_count=1, min_user_count=1),
    ),
    "generic": (
        None, "csv",
        dict(user="user_id", item="item_id", time="timestamp"),
        "your own file: set config.data.path, format and columns",
        {},
    ),
    "synthetic": (None, "synthetic", dict(user="user", item="item", time="time"),
                  "nothing to download (built-in generator)", {}),
}
assert set(_SOURCES) == set(DATASETS)


def dataset_defaults(name: str) -> dict:
    """``config.data`` of dataset ``name`` as a plain dict (DataSpec defaults + the dataset's)."""
    if name not in _SOURCES:
        raise ConfigError(f"config.data.name={name!r} is unknown: use one of {list(DATASETS)}")
    path, fmt, columns, url, overrides = _SOURCES[name]
    values = DataSpec().to_dict()
    values.update(name=name, path=path, format=fmt, source_url=url, **overrides)
    values["columns"] = {**values["columns"], **columns}
    return values


def _config(spec, values: dict | None = None) -> ml_collections.ConfigDict:
    """A ConfigDict of ``spec``'s fields; None-valued fields become typed placeholders, so a
    command-line override (``--config.train.window_stride=25``) is parsed as the field's type."""
    values = spec.to_dict() if values is None else values
    hints = typing.get_type_hints(type(spec))
    out = {}
    for f in dataclasses.fields(spec):
        value, hint = values[f.name], hints[f.name]
        sub = getattr(spec, f.name)
        if dataclasses.is_dataclass(sub):
            out[f.name] = _config(sub, value)
        elif value is None:
            kind = next(a for a in typing.get_args(hint) if a is not type(None))
            out[f.name] = config_dict.placeholder(kind)
        else:
            out[f.name] = value
    return ml_collections.ConfigDict(out)


def dataset_config(name: str) -> ml_collections.ConfigDict:
    """The locked default ``config.data`` for dataset ``name`` (fields in the module docstring):
    assigning an unknown key raises, so a misspelled override fails at start-up."""
    values = dataset_defaults(name)
    cfg = _config(DataSpec.from_dict(values), values)
    cfg.lock()
    return cfg


def run_config(dataset: str = "synthetic") -> ml_collections.ConfigDict:
    """Every field of a run config with its default, ``data`` from ``dataset_config(dataset)``."""
    c = _config(RunSpec())
    c.data = dataset_config(dataset)
    return c


__all__ = ["DATASETS", "dataset_config", "dataset_defaults", "run_config"]
