"""Windows, evaluation inputs and the batch iterator against per-user Python references."""

import numpy as np
import pytest

from srs_jax.data import BatchIterator, Sequences, last_items, training_windows
from srs_jax.data import batches as batches_mod
from srs_jax.data.batches import window_ends


def _random_seqs(rng, n_users=None, max_len=40, with_empty=True):
    n_users = n_users or int(rng.integers(5, 60))
    lengths = rng.integers(1, max_len, n_users)
    if with_empty:
        lengths[rng.random(n_users) < 0.1] = 0
    items = rng.integers(1, 10_000, int(lengths.sum())).astype(np.int32)
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    return Sequences(offsets, items, np.sort(rng.choice(10 * n_users, n_users, replace=False)))


def _pad_left(seq, width):
    seq = list(seq)[-width:]
    return [0] * (width - len(seq)) + seq


def ref_windows(seqs, max_len, stride):
    inputs, targets = [], []
    for r in range(len(seqs)):
        s = list(seqs.row(r))
        n = len(s)
        if n == 0:
            continue
        ends = [n]
        if stride is not None:
            while ends[-1] - (max_len + 1) > 0 and ends[-1] - stride >= 2:
                ends.append(ends[-1] - stride)
        for e in ends:
            w = _pad_left(s[:e], max_len + 1)
            inputs.append(w[:-1])
            targets.append(w[1:])
    return np.array(inputs, np.int32).reshape(-1, max_len), np.array(targets, np.int32).reshape(-1, max_len)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("stride", [None, 1, 3, 7, 50])
def test_training_windows_match_reference(seed, stride):
    rng = np.random.default_rng(seed)
    seqs = _random_seqs(rng)
    max_len = int(rng.integers(1, 25))
    x, y = training_windows(seqs, max_len, stride=stride)
    rx, ry = ref_windows(seqs, max_len, stride)
    assert x.dtype == np.int32 and y.dtype == np.int32 and x.shape == (len(rx), max_len)
    np.testing.assert_array_equal(x, rx)
    np.testing.assert_array_equal(y, ry)
    # Targets are the inputs shifted by one; padding is a prefix.
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
    assert np.all(np.diff((y > 0).astype(int), axis=1) >= 0)


def test_sliding_windows_cover_every_target():
    rng = np.random.default_rng(9)
    seqs = _random_seqs(rng, n_users=30, max_len=80, with_empty=False)
    for stride in (1, 4, 10, 11):
        x, y = training_windows(seqs, 10, stride=stride)
        row, end = window_ends(seqs.lengths(), 10, stride)
        for r in range(len(seqs)):
            s = seqs.row(r)
            ends = end[row == r]
            # Every position 1..n-1 is a target of some window (with inputs), for stride <= L.
            covered = set()
            for e in ends:
                covered |= set(range(max(1, e - 10), e))
            if stride <= 10 and len(s) >= 2:
                assert covered == set(range(1, len(s))), (stride, len(s), ends)


def test_one_item_and_short_rows():
    seqs = Sequences(np.array([0, 1, 3], np.int64), np.array([5, 6, 7], np.int32),
                     np.array([0, 1], np.int64))
    x, y = training_windows(seqs, 4)
    np.testing.assert_array_equal(x, [[0, 0, 0, 0], [0, 0, 0, 6]])
    np.testing.assert_array_equal(y, [[0, 0, 0, 5], [0, 0, 6, 7]])
    np.testing.assert_array_equal(last_items(seqs, 2), [[0, 5], [6, 7]])


@pytest.mark.parametrize("seed", range(3))
def test_last_items_match_reference(seed, monkeypatch):
    rng = np.random.default_rng(seed)
    seqs = _random_seqs(rng)
    max_len = int(rng.integers(1, 30))
    monkeypatch.setattr(batches_mod, "_CHUNK_ELEMENTS", 37)  # many ragged chunks
    got = last_items(seqs, max_len)
    want = np.array([_pad_left(seqs.row(r), max_len) for r in range(len(seqs))], np.int32)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want)


def test_window_errors():
    seqs = Sequences.empty()
    with pytest.raises(ValueError, match="max_len=0 must be >= 1"):
        training_windows(seqs, 0)
    with pytest.raises(ValueError, match="stride=0 must be >= 1"):
        training_windows(seqs, 4, stride=0)
    assert training_windows(seqs, 4)[0].shape == (0, 4)
    no_items = Sequences(np.zeros(3, np.int64), np.zeros(0, np.int32), np.arange(2))
    np.testing.assert_array_equal(last_items(no_items, 3), np.zeros((2, 3), np.int32))


def _arrays(n, rng):
    return {"inputs": rng.integers(1, 99, (n, 6)).astype(np.int32),
            "targets": rng.integers(1, 99, (n, 6)).astype(np.int64)}


@pytest.mark.parametrize("n,bs", [(103, 10), (100, 10), (7, 32), (1, 1)])
def test_batch_iterator_covers_rows_once_and_pads(n, bs):
    rng = np.random.default_rng(n)
    arrays = _arrays(n, rng)
    it = BatchIterator(arrays, bs, seed=3, epoch=0)
    batches = list(it)
    assert len(batches) == len(it) == -(-n // bs)
    for b in batches:
        assert set(b) == {"inputs", "targets"}
        assert all(v.dtype == np.int32 and v.shape == (bs, 6) for v in b.values())
    stacked = np.concatenate([b["inputs"] for b in batches])
    n_pad = len(stacked) - n
    assert np.all(stacked[n:] == 0) and np.all(np.concatenate([b["targets"] for b in batches])[n:] == 0)
    # Each row exactly once (rows are identified by their content plus index).
    order = it.order
    np.testing.assert_array_equal(stacked[:n], arrays["inputs"][order])
    assert sorted(order) == list(range(n)) and n_pad < bs


def test_batch_iterator_determinism_shuffle_and_resume():
    rng = np.random.default_rng(0)
    arrays = _arrays(257, rng)
    a = [b["inputs"] for b in BatchIterator(arrays, 16, seed=1, epoch=2)]
    b = [b["inputs"] for b in BatchIterator(arrays, 16, seed=1, epoch=2)]
    c = [b["inputs"] for b in BatchIterator(arrays, 16, seed=1, epoch=3)]
    d = [b["inputs"] for b in BatchIterator(arrays, 16, seed=2, epoch=2)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(np.concatenate(a), np.concatenate(c))
    assert not np.array_equal(np.concatenate(a), np.concatenate(d))
    for start in (0, 1, 7, 16, 17):
        resumed = list(BatchIterator(arrays, 16, seed=1, epoch=2, start_step=start))
        assert len(resumed) == len(a) - start
        assert all(np.array_equal(x["inputs"], y) for x, y in zip(resumed, a[start:]))
    plain = np.concatenate([b["inputs"] for b in BatchIterator(arrays, 16, seed=1, epoch=2,
                                                                shuffle=False)])
    np.testing.assert_array_equal(plain[:257], arrays["inputs"])


@pytest.mark.parametrize("n, bs, parts", [(23, 8, 2), (40, 8, 4), (5, 8, 2)])
def test_batch_iterator_rows_are_a_share_of_the_same_batches(n, bs, parts):
    """Each process's ``rows`` of every batch, side by side, are the batches of one iterator."""
    arrays = {"x": np.arange(n * 2, dtype=np.int32).reshape(n, 2)}
    start = 1 if n > bs else 0  # resumed mid-epoch where there is more than one batch
    whole = list(BatchIterator(arrays, bs, seed=3, epoch=1, start_step=start))
    step = bs // parts
    shares = [list(BatchIterator(arrays, bs, seed=3, epoch=1, start_step=start,
                                 rows=slice(i * step, (i + 1) * step))) for i in range(parts)]
    assert len(whole) == len(shares[0]) > 0
    for j, batch in enumerate(whole):
        assert all(s[j]["x"].shape == (step, 2) for s in shares)
        np.testing.assert_array_equal(np.concatenate([s[j]["x"] for s in shares]), batch["x"])


def test_batch_iterator_errors():
    a = np.zeros((4, 2), np.int32)
    with pytest.raises(ValueError, match="differ in length"):
        BatchIterator({"a": a, "b": a[:3]}, 2, seed=0, epoch=0)
    with pytest.raises(ValueError, match="batch_size=0 must be >= 1"):
        BatchIterator({"a": a}, 0, seed=0, epoch=0)
    with pytest.raises(ValueError, match="integers only"):
        BatchIterator({"a": a.astype(np.float32)}, 2, seed=0, epoch=0)
    with pytest.raises(ValueError, match=r"start_step=5 outside \[0, 2\]"):
        BatchIterator({"a": a}, 2, seed=0, epoch=0, start_step=5)
    with pytest.raises(ValueError, match="at least one array"):
        BatchIterator({}, 2, seed=0, epoch=0)


@pytest.mark.parametrize("n_batches,k", [(7, 3), (6, 3), (2, 5), (1, 1)])
def test_stacked_blocks_keep_order_and_pad_with_the_last_batch(n_batches, k):
    from srs_jax.data.batches import stacked_blocks

    rng = np.random.default_rng([n_batches, k])
    batches = [{"inputs": rng.integers(0, 99, (4, 5)).astype(np.int32),
                "targets": rng.integers(0, 99, (4, 5)).astype(np.int32)} for _ in range(n_batches)]
    blocks = list(stacked_blocks(iter(batches), k))
    assert len(blocks) == -(-n_batches // k)
    for b, block in enumerate(blocks):
        assert set(block) == {"inputs", "targets"}
        for name, x in block.items():
            assert x.shape == (k, 4, 5) and x.dtype == np.int32
            for j in range(k):  # slots past the real batches repeat the last one
                np.testing.assert_array_equal(x[j], batches[min(b * k + j, n_batches - 1)][name])


def test_stacked_blocks_rejects_k_below_one():
    from srs_jax.data.batches import stacked_blocks

    with pytest.raises(ValueError, match="k=0"):
        next(stacked_blocks(iter([]), 0))
