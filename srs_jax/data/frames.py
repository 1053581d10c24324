"""Source frames built from numpy arrays (the synthetic generator's output)."""

from __future__ import annotations

import numpy as np
import polars as pl


def frame_from_arrays(user: np.ndarray, item: np.ndarray, time: np.ndarray) -> pl.DataFrame:
    """A source frame ``(user, item, time int64, row uint32)`` from numpy arrays (rows already in
    their original order)."""
    return pl.DataFrame({
        "user": user, "item": item, "time": time.astype(np.int64, copy=False),
        "row": np.arange(len(user), dtype=np.uint32),
    })
