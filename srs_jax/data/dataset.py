"""``prepare_dataset``: raw file (or synthetic generator) -> filtered, split, encoded, cached
``PreparedDataset`` (containers in ``srs_jax.data.containers``, re-exported here).

Item ids are encoded ``1..V`` (``0`` is padding, never an item); user ids are encoded
``0..U-1`` (index into ``user_raw_ids``).
"""

from __future__ import annotations

import logging
import time

import polars as pl

from srs_jax.data import cache, preprocess, sources, splits
from srs_jax.data.config import validate_config
from srs_jax.data.containers import EvalSplit, PreparedDataset, Sequences

__all__ = ["EvalSplit", "PreparedDataset", "Sequences", "prepare_dataset"]

log = logging.getLogger(__name__)


def prepare_dataset(data_config) -> PreparedDataset:
    """Reads, filters, splits and encodes ``data_config``; loads/stores it in the cache."""
    validate_config(data_config)
    if data_config.format != "synthetic":
        sources.raw_path(data_config)  # missing file: fail before anything else
    cache_dir = None
    if data_config.use_cache:
        cache_dir = cache.cache_path(data_config)
        start = time.perf_counter()
        dataset = cache.load(cache_dir)
        if dataset is not None:
            log.info("loaded %s from cache %s in %.2fs", data_config.name, cache_dir,
                     time.perf_counter() - start)
            return dataset
    start = time.perf_counter()
    lazy = sources.read_source(data_config)
    try:
        interactions = preprocess.load_interactions(lazy, data_config)
    except pl.exceptions.PolarsError as e:  # a value the config's columns / formats cannot parse
        raise sources.DataFileError(sources.parse_error_message(data_config, e)) from e
    dataset = splits.split_dataset(interactions, data_config)
    log.info("prepared %s in %.1fs", data_config.name, time.perf_counter() - start)
    if cache_dir is not None:
        try:
            cache.save(dataset, cache_dir)
        except OSError as e:  # a full disk: the prepared data is still good, only not cached
            log.warning("could not cache the prepared dataset in %s (%s): continuing without "
                        "the cache; free disk space or set config.data.cache_dir", cache_dir,
                        e.strerror or e)
    return dataset
