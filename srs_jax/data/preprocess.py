"""Reference row filters and dense raw-id codes, on numpy arrays.

``load_interactions(lf, cfg)`` collects a source LazyFrame ``(user, item, time, row)`` once, maps
raw ids to dense int32 codes (in sorted raw-id order), applies the two single-pass filters of the
reference pipeline (items with fewer than ``min_item_count`` rows are dropped, then users with
fewer than ``min_user_count`` rows, counted after the item filter) and returns ``Interactions``
in the original row order. No Python object per row is ever created.

``data.time_until`` (Unix seconds, optional) first drops the rows later than it, so one raw file
also serves as any older snapshot of itself. The sources give time as int64 in the unit of the
file; the unit is read from the magnitude of the latest time (below 1e11: seconds, below 1e14:
milliseconds, below 1e17: microseconds, else nanoseconds; i.e. any date after 1973 is read
right). Formats without a time column (``user_item``, ``user_items``) reject it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl


@dataclasses.dataclass(frozen=True)
class Interactions:
    """Filtered interactions, rows in original file order (so a stable sort by time orders by
    (time, original row)).

    user: int32[N] in 0..U-1 (index into ``user_raw_ids``); item: int32[N] in 0..I-1 (index into
    ``item_raw_ids``); time: int64[N].
    """

    user: np.ndarray
    item: np.ndarray
    time: np.ndarray
    user_raw_ids: np.ndarray
    item_raw_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.user)

    @property
    def n_users(self) -> int:
        return len(self.user_raw_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_raw_ids)


def count_filter(user: np.ndarray, item: np.ndarray, min_item_count: int,
                 min_user_count: int) -> np.ndarray:
    """bool[N]: rows kept by the item filter, then the user filter (one pass each, row counts)."""
    keep = np.bincount(item)[item] >= min_item_count
    kept_users = user[keep]
    keep[keep] = np.bincount(kept_users)[kept_users] >= min_user_count
    return keep


NO_TIME_FORMATS = ("user_item", "user_items")


def time_scale(latest: int) -> int:
    """Time units per second of a time column whose latest value is ``latest`` (see module doc)."""
    latest = abs(int(latest))
    for limit, scale in ((10**11, 1), (10**14, 1_000), (10**17, 1_000_000)):
        if latest < limit:
            return scale
    return 1_000_000_000


def time_cutoff(time: np.ndarray, time_until: float) -> int:
    """The last kept value of ``time`` (int64, the file's unit) for ``time_until`` Unix seconds."""
    scale = time_scale(time.max()) if len(time) else 1
    return int(np.floor(float(time_until) * scale))


def _dense_codes(series: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """(codes int32[N] in sorted raw-id order, sorted unique raw ids)."""
    if series.dtype.is_integer() and len(series):
        lo, hi = int(series.min()), int(series.max())
        if hi - lo <= 4 * len(series) + 1_000_000:  # compact id range: O(N) lookup, no sort
            values = series.to_numpy()
            shifted = values.astype(np.int64) - lo
            present = np.bincount(shifted, minlength=hi - lo + 1) > 0
            lut = (np.cumsum(present) - 1).astype(np.int32)
            raw = (np.flatnonzero(present) + lo).astype(values.dtype)
            del values, present
            return lut[shifted], raw
    codes = series.rank("dense").cast(pl.Int32).to_numpy() - 1
    raw = series.unique().sort().to_numpy()
    if raw.dtype == object:  # polars strings -> fixed-width unicode, saved without pickle
        raw = raw.astype(str)
    return codes.astype(np.int32, copy=False), raw


def _compact(codes: np.ndarray, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Re-densifies codes after filtering, keeping the sorted raw-id order."""
    present = np.bincount(codes, minlength=len(raw)) > 0
    lut = np.cumsum(present, dtype=np.int64).astype(np.int32) - 1
    return lut[codes], raw[present]


def load_interactions(lf: pl.LazyFrame, cfg) -> Interactions:
    """Collects ``lf`` and applies the filters of ``cfg`` (see module docstring)."""
    df = lf.collect()
    if df.height and not df["row"].is_sorted():  # parallel readers keep order; be sure anyway
        df = df.sort("row")
    if df.height == 0:
        raise ValueError(f"{cfg.name}: the raw data has no rows after the rating/event filters "
                         f"(min_rating={cfg.min_rating}, event_value={cfg.event_value}): check "
                         f"config.data.path and those keys")
    time_until = cfg.time_until
    if time_until is not None:
        if cfg.format in NO_TIME_FORMATS:
            raise ValueError(f"{cfg.name}: config.data.time_until needs a time column, and format "
                             f"{cfg.format!r} has none (its order is the file order): unset it")
        cutoff = time_cutoff(df.get_column("time").to_numpy(), time_until)
        df = df.filter(pl.col("time") <= cutoff)
        if df.height == 0:
            raise ValueError(f"{cfg.name}: no rows at or before config.data.time_until={time_until} "
                             f"(Unix seconds): raise it")
    # Column by column, dropping each raw column once converted: peak memory matters at 10^8+.
    df = df.drop("row")
    user, user_raw = _dense_codes(df.get_column("user"))
    df = df.drop("user")
    item, item_raw = _dense_codes(df.get_column("item"))
    time = df.get_column("time").to_numpy()
    del df
    keep = count_filter(user, item, cfg.min_item_count, cfg.min_user_count)
    if not keep.any():
        raise ValueError(
            f"{cfg.name}: no interactions left after filtering (min_item_count="
            f"{cfg.min_item_count}, min_user_count={cfg.min_user_count}): lower "
            f"config.data.min_item_count / min_user_count")
    if not keep.all():
        user, item, time = user[keep], item[keep], time[keep]
    del keep
    user, user_raw = _compact(user, user_raw)
    item, item_raw = _compact(item, item_raw)
    return Interactions(user=user, item=item, time=np.ascontiguousarray(time),
                        user_raw_ids=user_raw, item_raw_ids=item_raw)
