"""Fixed-length int32 windows over ``Sequences`` and a resumable, seeded batch iterator.

Windows are built with one gather per chunk of rows (no Python loop per user). Left padding with
0; in ``training_windows`` a target of 0 means "no target at this position". As in the reference
(MemoryEfficientSRS), the first item of a window shorter than ``L + 1`` is a target
whose input position is padding, and a one-item sequence gives one sample with an all-padding
input.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from srs_jax.data.containers import Sequences

_CHUNK_ELEMENTS = 1 << 24  # rows x width gathered at once (int64 index: 128 MiB)


def _gather(seqs: Sequences, row: np.ndarray, end: np.ndarray, width: int) -> np.ndarray:
    """int32[S, width]: items ``[end - width, end)`` of rows ``row`` (positions relative to the
    row start), left-padded with 0 where the window starts before the row."""
    out = np.zeros((len(row), width), np.int32)
    if len(seqs.items) == 0:
        return out
    step = max(1, _CHUNK_ELEMENTS // max(width, 1))
    cols = np.arange(width - 1, -1, -1, dtype=np.int64)[None, :]  # distance to the end
    for lo in range(0, len(row), step):
        r, e = row[lo:lo + step], end[lo:lo + step]
        pos = (e[:, None] - 1 - cols)  # within-row position, negative = padding
        valid = pos >= 0
        flat = seqs.offsets[r][:, None] + np.where(valid, pos, 0)
        out[lo:lo + step] = np.where(valid, seqs.items[np.minimum(flat, len(seqs.items) - 1)], 0)
    return out


def _check_len(max_len: int) -> None:
    if int(max_len) < 1:
        raise ValueError(f"max_len={max_len} must be >= 1 (config.model.max_len)")


def last_items(seqs: Sequences, max_len: int) -> np.ndarray:
    """int32[U, L]: the last ``max_len`` items of every row, left-padded with 0."""
    _check_len(max_len)
    rows = np.arange(len(seqs))
    return _gather(seqs, rows, seqs.lengths(), int(max_len))


def window_ends(lengths: np.ndarray, max_len: int, stride: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(row int64[S], end int64[S]) of every training window.

    Without ``stride``: one window per non-empty row, ending at the row's end. With ``stride``:
    windows ending at ``n, n - stride, n - 2 * stride, ...`` until a window reaches the row start
    (its start ``<= 0``), keeping only ends ``>= 2`` (at least one input->target pair) unless the
    row has a single item.
    """
    lengths = np.asarray(lengths, np.int64)
    rows = np.flatnonzero(lengths > 0)
    n = lengths[rows]
    if stride is None:
        return rows, n
    if int(stride) < 1:
        raise ValueError(f"stride={stride} must be >= 1 (or None for one window per user)")
    s, width = int(stride), int(max_len) + 1
    to_start = -(-np.maximum(n - width, 0) // s)  # windows needed to reach the row start
    reach_two = np.maximum((n - 2) // s, 0)  # last j with end n - j*s >= 2
    count = np.minimum(to_start, reach_two) + 1
    row = np.repeat(rows, count)
    j = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
    return row, np.repeat(n, count) - j * s


def training_windows(seqs: Sequences, max_len: int, stride: int | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(inputs int32[S, L], targets int32[S, L]): windows of ``L + 1`` items (see module doc).

    ``inputs = window[:-1]``, ``targets = window[1:]``. One window per user (its last ``L + 1``
    items) or, with ``stride``, sliding windows covering the whole history (``window_ends``).
    """
    _check_len(max_len)
    row, end = window_ends(seqs.lengths(), max_len, stride)
    # Two L-wide gathers instead of one (L+1)-wide window and two copies: 2/3 of the memory.
    return _gather(seqs, row, end - 1, int(max_len)), _gather(seqs, row, end, int(max_len))


class BatchIterator:
    """Batches of ``batch_size`` rows from equally long arrays, shuffled per (seed, epoch).

    Yields dicts of int32 arrays; the last batch is padded with all-zero rows (no target).
    ``start_step`` skips the first batches of the epoch: iterating from step k reproduces
    exactly the batches k, k+1, ... of a full pass (resuming mid-epoch). ``rows``: yield only
    these rows of each batch (one process's share of the global batch; the order is the same).
    """

    def __init__(self, arrays: dict[str, np.ndarray], batch_size: int, *, seed: int, epoch: int,
                 shuffle: bool = True, start_step: int = 0, rows: slice | None = None):
        if not arrays:
            raise ValueError("BatchIterator needs at least one array")
        sizes = {k: len(v) for k, v in arrays.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"BatchIterator arrays differ in length: {sizes}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        for key, value in arrays.items():
            if not np.issubdtype(np.asarray(value).dtype, np.integer):
                raise ValueError(f"BatchIterator array {key!r} has dtype {value.dtype}: integers only")
        self.arrays = arrays
        self.batch_size = int(batch_size)
        self.n_rows = next(iter(sizes.values()))
        self.steps_per_epoch = -(-self.n_rows // self.batch_size)
        if not 0 <= start_step <= self.steps_per_epoch:
            raise ValueError(f"start_step={start_step} outside [0, {self.steps_per_epoch}]")
        self.start_step = int(start_step)
        self.rows = slice(0, self.batch_size) if rows is None else rows
        if shuffle:
            self.order = np.random.default_rng([int(seed), int(epoch)]).permutation(self.n_rows)
        else:
            self.order = np.arange(self.n_rows)

    def __len__(self) -> int:
        return self.steps_per_epoch - self.start_step

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        bs = self.batch_size
        lo, hi = self.rows.start, self.rows.stop
        for step in range(self.start_step, self.steps_per_epoch):
            idx = self.order[step * bs:(step + 1) * bs][lo:hi]
            batch = {}
            for key, value in self.arrays.items():
                rows = np.asarray(value[idx], dtype=np.int32)
                if len(idx) < hi - lo:
                    pad = np.zeros((hi - lo - len(idx),) + rows.shape[1:], np.int32)
                    rows = np.concatenate([rows, pad])
                batch[key] = rows
            yield batch


def stacked_blocks(batches: Iterable[dict[str, np.ndarray]], k: int) -> Iterator[dict[str, np.ndarray]]:
    """Consecutive batches stacked in blocks of ``k``: dicts of ``[k, B, ...]`` arrays, so that
    the trainer moves ``k`` steps' inputs to the device in one transfer. The last block is filled
    up to ``k`` by repeating its last batch (one shape, one compile); the caller knows how many
    of its batches are real."""
    if int(k) < 1:
        raise ValueError(f"block size k={k} must be >= 1")
    block: list[dict[str, np.ndarray]] = []
    for batch in batches:
        block.append(batch)
        if len(block) == k:
            yield {name: np.stack([b[name] for b in block]) for name in block[0]}
            block = []
    if block:
        block += [block[-1]] * (k - len(block))
        yield {name: np.stack([b[name] for b in block]) for name in block[0]}
