"""Prepared-dataset containers (docs/architecture.md): ``Sequences``, ``EvalSplit``,
``PreparedDataset``.

Item ids are encoded ``1..V`` (``0`` is padding, never an item); user ids are encoded
``0..U-1`` (index into ``user_raw_ids``).
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Sequences:
    """Per-user item sequences in CSR layout, each row in time order.

    offsets: int64[U+1] (row r is ``items[offsets[r]:offsets[r+1]]``); items: int32[total]
    (encoded 1..V); users: int64[U] (encoded user index of each row, increasing).
    """

    offsets: np.ndarray
    items: np.ndarray
    users: np.ndarray

    def __post_init__(self):
        if len(self.offsets) != len(self.users) + 1 or self.offsets[-1] != len(self.items):
            raise ValueError(f"inconsistent Sequences: {len(self.offsets)} offsets, "
                             f"{len(self.users)} users, {len(self.items)} items")

    def __len__(self) -> int:
        return len(self.users)

    def lengths(self) -> np.ndarray:
        """int64[U]: number of items of each row."""
        return np.diff(self.offsets)

    def row(self, r: int) -> np.ndarray:
        """int32[n]: the items of row ``r``."""
        return self.items[self.offsets[r]:self.offsets[r + 1]]

    @staticmethod
    def empty() -> "Sequences":
        return Sequences(np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int64))


@dataclasses.dataclass(frozen=True)
class EvalSplit:
    """Evaluation users: ``inputs`` (history fed to the model), ``targets`` int32[U] (1..V),
    ``users`` int64[U] (== ``inputs.users``)."""

    inputs: Sequences
    targets: np.ndarray
    users: np.ndarray

    def __len__(self) -> int:
        return len(self.users)


@dataclasses.dataclass(frozen=True)
class PreparedDataset:
    """A split, encoded dataset (see docs/architecture.md and docs/data.md).

    n_items: V (the catalog: items encoded 1..V). n_users: number of users after filtering.
    item_raw_ids: [V+1] raw id of each encoded item, [0] a placeholder (-1 or "").
    user_raw_ids: [n_users] raw id of each encoded user. train: training sequences.
    val / test: evaluation users. test_period: histories (minus the held-out last item) of all
    test-period users, the reference set of Coverage/Surprisal. item_counts: int64[V+1]
    training frequency ([0] = 0). stats: counts of the preparation (see ``splits``).
    """

    n_items: int
    n_users: int
    item_raw_ids: np.ndarray
    user_raw_ids: np.ndarray
    train: Sequences
    val: EvalSplit
    test: EvalSplit
    test_period: Sequences
    item_counts: np.ndarray
    stats: dict
