"""Top-K recommendations from a saved run: what a notebook or a service calls.

    from srs_jax.inference import recommend
    recommend("runs/zvuk_cce", users=["u1", "u2"], k=10)        # raw user ids of the dataset
    recommend("runs/zvuk_cce", histories=[["i7", "i3"]], k=10)  # raw item ids, oldest first

Known users are scored from their latest history in the run's data (test input + test target, else
validation, else training). Items already in a history are never recommended. Returns raw item ids.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from srs_jax.training import evaluation
from srs_jax.training import steps as steps_lib
from srs_jax.training.saved_run import SavedRun, load_run


@functools.lru_cache(maxsize=4)
def _cached_run(workdir: str) -> SavedRun:
    return load_run(workdir)


class _Same:
    """A dataset as a cache key: equal only to itself (its arrays have no value hash). The key
    holds the dataset, so its id cannot be reused while the cache keeps the entry."""

    __slots__ = ("dataset",)

    def __init__(self, dataset):
        self.dataset = dataset

    def __hash__(self) -> int:
        return id(self.dataset)

    def __eq__(self, other) -> bool:
        return isinstance(other, _Same) and other.dataset is self.dataset


@functools.lru_cache(maxsize=1)  # one dataset's maps kept, not every one ever loaded
def _histories_of(key: _Same) -> tuple[dict, dict]:
    """Raw user id -> index and index -> latest history: O(total interactions) in Python, once
    per loaded dataset."""
    ds = key.dataset
    raw = np.asarray(ds.user_raw_ids)
    index = {str(u): i for i, u in enumerate(raw.tolist())}
    latest: dict[int, np.ndarray] = {}
    seqs = ds.train
    for u, a, b in zip(seqs.users.tolist(), seqs.offsets[:-1].tolist(), seqs.offsets[1:].tolist()):
        latest[int(u)] = seqs.items[a:b]
    for split in (ds.val, ds.test):  # later splits hold the longer, more recent histories
        s = split.inputs
        for j, (u, a, b) in enumerate(zip(split.users.tolist(), s.offsets[:-1].tolist(),
                                          s.offsets[1:].tolist())):
            latest[int(u)] = np.append(s.items[a:b], split.targets[j])
    return index, latest


def _user_histories(run: SavedRun, users: Sequence) -> list[np.ndarray]:
    index, latest = _histories_of(_Same(run.dataset))
    out = []
    for u in users:
        if str(u) not in index or index[str(u)] not in latest:
            raise ValueError(f"unknown user {u!r}: not in the run's data; pass histories= instead")
        out.append(np.asarray(latest[index[str(u)]], np.int32))
    return out


def _encode_items(run: SavedRun, histories: Sequence[Sequence]) -> list[np.ndarray]:
    raw = np.asarray(run.dataset.item_raw_ids)
    index = {str(v): i for i, v in enumerate(raw.tolist()) if i > 0}
    out = []
    for h in histories:
        unknown = [x for x in h if str(x) not in index]
        if unknown:
            raise ValueError(f"unknown item ids {unknown[:5]} in a history: use raw ids of the run's "
                             "catalog (run.dataset.item_raw_ids)")
        out.append(np.asarray([index[str(x)] for x in h], np.int32))
    return out


def recommend(workdir: str, users: Sequence | None = None, histories: Sequence | None = None,
              k: int = 10, *, run: SavedRun | None = None) -> np.ndarray:
    """``[len(users or histories), k]`` raw item ids, best first, for raw ``users`` or ``histories``."""
    if (users is None) == (histories is None):
        raise ValueError("pass exactly one of users= (raw user ids) or histories= (raw item ids)")
    if k < 1:
        raise ValueError(f"k={k} must be >= 1")
    run = run or _cached_run(str(workdir))
    encoded = _user_histories(run, users) if users is not None else _encode_items(run, histories)
    if not encoded:
        return np.empty((0, k), dtype=np.asarray(run.dataset.item_raw_ids).dtype)
    if any(len(h) == 0 for h in encoded):
        raise ValueError("an empty history cannot be scored: give at least one item per user")
    if k > run.dataset.n_items:
        raise ValueError(f"k={k} exceeds the catalog size {run.dataset.n_items}")
    top = evaluation.top_k_for_histories(run.graphdef, run.state, encoded, k, config=run.config,
                                         encode_fn=steps_lib.make_encode_step(run.config.model))
    return np.asarray(run.dataset.item_raw_ids)[top]
