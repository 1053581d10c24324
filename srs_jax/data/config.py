"""Default data configs: ``config.data = dataset_config("zvuk")``, then override fields.

Every field of the returned (locked) ``ml_collections.ConfigDict``; assigning an unknown key
raises, so a misspelled override fails at start-up:

* ``name``: dataset name (one of ``DATASETS``); used in the cache directory name and messages.
* ``path``: the raw file (``~`` is expanded). Relative paths are relative to the working directory.
  ``None`` for ``synthetic``.
* ``format``: how ``path`` is read (``srs_jax.data.sources.FORMATS``): ``csv`` (delimited text
  with a header; ``.gz`` allowed), ``parquet``, ``snap_gowalla`` (SNAP check-ins, no header),
  ``user_item`` (``user item`` per line, lines in time order: SASRec/BERT4Rec files),
  ``user_items`` (``user item1 item2 ...`` per line: S3-Rec files), ``synthetic``.
* ``separator``: field separator for ``csv`` (``","``; ``"\\t"`` for TSV).
* ``columns.user / item / time``: raw column names. ``columns.rating`` / ``columns.event``:
  optional columns used only by the row filters below (``None`` = not read).
* ``time_format``: strptime format for a string time column (``None`` = let polars infer).
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
* ``synthetic``: generator settings (see ``srs_jax.data.synthetic``): ``n_users``, ``n_items``,
  ``mean_length``, ``min_length``, ``max_length``, ``length_sigma`` (log-normal spread),
  ``zipf_exponent``, ``n_clusters``, ``n_successors``, ``p_follow`` (next item = a successor of
  the previous one), ``p_switch`` (change latent cluster), ``mean_gap_s`` (seconds between a
  user's interactions), ``time_span_s`` (range of user start times), ``seed``.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

DATASETS = (
    "movielens_20m",
    "beauty",
    "zvuk",
    "megamarket",
    "30music",
    "gowalla",
    "gowalla_snap",
    "synthetic",
    "amazon_sports",
    "amazon_video_games",
    "generic",
)

SPLITS = ("global_temporal", "leave_one_out")

_REFERENCE_ZIPS = "the Yandex-disk archive linked from github.com/On-Point-RND/MemoryEfficientSRS"

# name -> (path, format, columns, source_url, overrides)
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


def synthetic_config() -> ml_collections.ConfigDict:
    """Generator defaults: a toy set (~5k users, 2k items, ~150k interactions) for the CPU."""
    return ml_collections.ConfigDict(dict(
        n_users=5_000,
        n_items=2_000,
        mean_length=30.0,
        min_length=5,
        max_length=1_000,
        length_sigma=0.8,
        zipf_exponent=1.0,
        n_clusters=50,
        n_successors=4,
        p_follow=0.6,
        p_switch=0.1,
        mean_gap_s=86_400.0,
        time_span_s=60 * 86_400,
        seed=0,
    ))


def dataset_config(name: str) -> ml_collections.ConfigDict:
    """Returns the locked default ``config.data`` for dataset ``name`` (see module docstring)."""
    if name not in _SOURCES:
        raise ValueError(f"unknown dataset {name!r}: use one of {list(DATASETS)}")
    path, fmt, columns, url, overrides = _SOURCES[name]
    cfg = ml_collections.ConfigDict(dict(
        name=name,
        path=path if path is not None else config_dict.placeholder(str),
        format=fmt,
        separator=",",
        columns=dict(
            user=columns["user"],
            item=columns["item"],
            time=columns["time"],
            rating=columns.get("rating", config_dict.placeholder(str)),
            event=columns.get("event", config_dict.placeholder(str)),
        ),
        time_format=config_dict.placeholder(str),
        min_rating=config_dict.placeholder(float),
        event_value=config_dict.placeholder(int),
        min_item_count=5,
        min_user_count=3,
        split="global_temporal",
        time_quantile=0.9,
        val_user_fraction=0.05,
        seed=42,
        cache_dir="~/.cache/srs_jax",
        use_cache=True,
        source_url=url,
        synthetic=synthetic_config(),
    ))
    for key, value in overrides.items():
        cfg[key] = value
    cfg.lock()
    return cfg


def validate_config(cfg: ml_collections.ConfigDict) -> None:
    """One-line ValueErrors for settings that cannot work (called before any data is read)."""
    if cfg.split not in SPLITS:
        raise ValueError(f"config.data.split={cfg.split!r} is unknown: use one of {list(SPLITS)}")
    if not 0.0 < cfg.time_quantile < 1.0:
        raise ValueError(f"config.data.time_quantile={cfg.time_quantile} must be in (0, 1)")
    if not 0.0 <= cfg.val_user_fraction < 1.0:
        raise ValueError(f"config.data.val_user_fraction={cfg.val_user_fraction} must be in [0, 1)")
    for key in ("min_item_count", "min_user_count"):
        if cfg[key] < 0:
            raise ValueError(f"config.data.{key}={cfg[key]} must be >= 0")
