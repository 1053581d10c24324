"""Train / validation / test splits and item encoding, vectorised numpy (no loop per user).

Order rule everywhere: stable by time, then by original row (``Interactions`` rows are in row
order, so a stable sort on time alone gives exactly this order).

``global_temporal`` (MemoryEfficientSRS's split, the default for the six benchmarks):
  1. ``t*`` = time of the interaction at position ``floor(N * time_quantile)`` in time order;
     rows with ``time < t*`` are pre-threshold, ``time >= t*`` post-threshold (ties go to test).
  2. Validation users: ``val_user_fraction`` of the pre-threshold users (first-appearance order,
     seeded permutation; ``N - round((1 - f) * N)`` users). They are never trained on.
  3. Training = pre-threshold rows of the other users. Items are encoded ``1..V`` by first
     appearance in the training rows (time order); V = distinct training items.
  4. Validation = pre-threshold rows of validation users with training items; each user with 2+
     such rows: input = all but the last row, target = the last row.
  5. Test users = users with a post-threshold row whose item occurs before ``t*`` (any user),
     minus validation users. Their rows (both sides of ``t*``) with training items, per user in
     time order: the last row is the target, the others the input, if the user has 2+ rows.
     Only test users with training rows are scored (``test``); ``test_period`` keeps the inputs
     of all of them (the reference Coverage/Surprisal set).

``leave_one_out`` (most published SASRec/BERT4Rec results): per user in time order, with 3+
rows: last item = test target, second-to-last = validation target; training = the rest. Users
with fewer rows are training only. Items are encoded by first appearance in the training rows,
then the items that occur only as targets (V = all items). Validation input = training
sequence, test input = training sequence + validation target. ``test_period`` = test inputs.
"""

from __future__ import annotations

import numpy as np

from srs_jax.data.containers import EvalSplit, PreparedDataset, Sequences
from srs_jax.data.preprocess import Interactions


def split_dataset(x: Interactions, cfg) -> PreparedDataset:
    """Applies ``cfg.split`` to filtered interactions ``x``."""
    if cfg.split == "global_temporal":
        return global_temporal(x, cfg)
    if cfg.split == "leave_one_out":
        return leave_one_out(x, cfg)
    raise ValueError(f"config.data.split={cfg.split!r} is unknown: use global_temporal or leave_one_out")


def _narrow(index: np.ndarray) -> np.ndarray:
    """int32 row indices when they fit (half the memory of numpy's int64 at 10^8 rows)."""
    return index.astype(np.int32) if len(index) < 2**31 else index


def time_order(time: np.ndarray) -> np.ndarray:
    """Rows sorted by (time, original row): a stable sort, since rows are in original order.

    numpy sorts here (not polars): their only allocation is the output, which keeps the peak
    memory of 10^8-row splits low."""
    return _narrow(np.argsort(time, kind="stable"))


def user_time_order(user: np.ndarray, torder: np.ndarray) -> np.ndarray:
    """Rows sorted by (user, time, row), given ``torder`` from ``time_order``.

    Sorts one unique int64 key ``user * N + time rank`` (no ties, so any sort is exact)."""
    n = len(user)
    key = np.empty(n, np.int64)
    key[torder] = np.arange(n, dtype=np.int64)
    key += user.astype(np.int64) * n
    return _narrow(np.argsort(key))


def first_appearance(values: np.ndarray, n_values: int) -> np.ndarray:
    """Distinct values of ``values`` (ints in ``[0, n_values)``) in order of first appearance."""
    first = np.full(n_values, len(values), np.int64)
    np.minimum.at(first, values, np.arange(len(values), dtype=np.int64))
    seen = np.flatnonzero(first < len(values))
    return seen[np.argsort(first[seen], kind="stable")]


def group_rows(user_sorted: np.ndarray, items_sorted: np.ndarray) -> Sequences:
    """CSR ``Sequences`` from rows already sorted by (user, time)."""
    n = len(user_sorted)
    if n == 0:
        return Sequences.empty()
    starts = np.flatnonzero(np.r_[True, user_sorted[1:] != user_sorted[:-1]])
    offsets = np.r_[starts, n].astype(np.int64)
    return Sequences(offsets, items_sorted.astype(np.int32, copy=False),
                     user_sorted[starts].astype(np.int64))


def hold_out_last(seqs: Sequences, keep_rows: np.ndarray | None = None) -> EvalSplit:
    """Rows with 2+ items (and ``keep_rows``): input = all but the last item, target = last."""
    lengths = seqs.lengths()
    keep = lengths >= 2
    if keep_rows is not None:
        keep &= keep_rows
    return _take_prefix(seqs, keep, lengths - 1)


def _take_prefix(seqs: Sequences, keep: np.ndarray, prefix_len: np.ndarray) -> EvalSplit:
    """Rows ``keep`` cut to their first ``prefix_len`` items; target = the next item."""
    inputs = _prefix(seqs, keep, prefix_len)
    targets = seqs.items[seqs.offsets[:-1][keep] + prefix_len[keep]].astype(np.int32)
    return EvalSplit(inputs=inputs, targets=targets, users=inputs.users)


def _prefix(seqs: Sequences, keep: np.ndarray, prefix_len: np.ndarray) -> Sequences:
    """Rows ``keep`` cut to their first ``prefix_len`` items."""
    item_mask = _prefix_mask(seqs.offsets, keep, prefix_len)
    new_len = prefix_len[keep]
    return Sequences(np.r_[0, np.cumsum(new_len)].astype(np.int64), seqs.items[item_mask],
                     seqs.users[keep])


def _prefix_mask(offsets: np.ndarray, keep: np.ndarray, prefix_len: np.ndarray) -> np.ndarray:
    """bool[total]: the first ``prefix_len[r]`` positions of each row ``r`` with ``keep[r]``.

    +1 at each kept start, -1 at its prefix end, running sum: 1 byte per item (no int64 index
    per item), which matters at 10^8 items."""
    keep = keep & (prefix_len > 0)  # empty prefixes mark nothing; the rest never share an end
    starts = offsets[:-1][keep]
    ends = starts + prefix_len[keep]
    marks = np.zeros(int(offsets[-1]) + 1, np.int8)
    marks[starts] += 1  # starts are distinct, and so are ends
    marks[ends] -= 1
    return np.cumsum(marks[:-1], dtype=np.int8) > 0


def _encoder(first_items: np.ndarray, n_raw_items: int) -> np.ndarray:
    """int32[I] lookup raw code -> encoded id (1..V in the given order, 0 = not encoded)."""
    lut = np.zeros(n_raw_items, np.int32)
    lut[first_items] = np.arange(1, len(first_items) + 1, dtype=np.int32)
    return lut


def _raw_ids_with_padding(raw: np.ndarray, first_items: np.ndarray) -> np.ndarray:
    pad = np.array(["" if raw.dtype.kind in "US" else -1], dtype=raw.dtype)
    return np.concatenate([pad, raw[first_items]])


def _subset(x: Interactions, uorder: np.ndarray, mask: np.ndarray, lut: np.ndarray) -> Sequences:
    idx = uorder[mask[uorder]]
    return group_rows(x.user[idx], lut[x.item[idx]])


def _too_few(cfg, what: str, fix: str) -> ValueError:
    return ValueError(f"{cfg.name}: too few users for the {cfg.split} split: {what}; {fix}")


def global_temporal(x: Interactions, cfg) -> PreparedDataset:
    """The reference split (module docstring)."""
    n = len(x)
    torder = time_order(x.time)
    t_star = x.time[torder[int(np.floor(n * cfg.time_quantile))]]
    pre = x.time < t_star
    if not pre.any():
        raise _too_few(cfg, f"no interaction before the {cfg.time_quantile} time quantile (all "
                            f"at time {t_star})", "lower config.data.time_quantile or use "
                            "split='leave_one_out'")

    pre_users = first_appearance(x.user[torder[pre[torder]]], x.n_users)
    rng = np.random.default_rng(cfg.seed)
    n_train_users = int(np.floor((1.0 - cfg.val_user_fraction) * len(pre_users) + 0.5))
    is_val = np.zeros(x.n_users, bool)
    is_val[pre_users[rng.permutation(len(pre_users))[n_train_users:]]] = True

    train_mask = pre & ~is_val[x.user]
    first_items = first_appearance(x.item[torder[train_mask[torder]]], x.n_items)
    lut = _encoder(first_items, x.n_items)
    warm = lut[x.item] > 0
    seen_pre = np.zeros(x.n_items, bool)
    seen_pre[x.item[pre]] = True
    is_test = np.zeros(x.n_users, bool)
    is_test[x.user[~pre & seen_pre[x.item]]] = True
    is_test &= ~is_val
    uorder = user_time_order(x.user, torder)
    del torder

    train = _subset(x, uorder, train_mask, lut)
    val = hold_out_last(_subset(x, uorder, pre & is_val[x.user] & warm, lut))
    test_all = hold_out_last(_subset(x, uorder, is_test[x.user] & warm, lut))
    is_train_user = np.zeros(x.n_users, bool)
    is_train_user[train.users] = True
    scored = is_train_user[test_all.users]
    test = EvalSplit(_rows(test_all.inputs, scored), test_all.targets[scored],
                     test_all.users[scored])

    if len(train) == 0:
        raise _too_few(cfg, "no training user", "use more data or lower config.data.val_user_fraction")
    if len(val) == 0:
        raise _too_few(cfg, f"no validation user has 2+ pre-threshold interactions "
                            f"({len(pre_users)} pre-threshold users, val_user_fraction="
                            f"{cfg.val_user_fraction})", "raise config.data.val_user_fraction "
                            "or use more data")
    if len(test) == 0:
        raise _too_few(cfg, "no test user has training history and 2+ interactions",
                       "lower config.data.time_quantile or use split='leave_one_out'")
    stats = _stats(x, cfg, train, val, test, len(first_items))
    stats.update(time_threshold=int(t_star), n_test_period_users=len(test_all))
    return PreparedDataset(
        n_items=len(first_items), n_users=x.n_users,
        item_raw_ids=_raw_ids_with_padding(x.item_raw_ids, first_items),
        user_raw_ids=x.user_raw_ids, train=train, val=val, test=test,
        test_period=test_all.inputs, item_counts=_counts(train, len(first_items)), stats=stats)


def leave_one_out(x: Interactions, cfg) -> PreparedDataset:
    """Last item = test, second-to-last = validation (module docstring)."""
    torder = time_order(x.time)
    uorder = user_time_order(x.user, torder)
    full = group_rows(x.user[uorder], x.item[uorder])  # raw item codes for now
    lengths = full.lengths()
    scored = lengths >= 3
    if not scored.any():
        raise _too_few(cfg, "no user has 3+ interactions after filtering",
                       "lower config.data.min_item_count or use more data")
    train_len = np.where(scored, lengths - 2, lengths)
    train_mask = np.empty(len(x), bool)
    train_mask[uorder] = _prefix_mask(full.offsets, np.ones(len(full), bool), train_len)

    first_items = first_appearance(np.concatenate(
        [x.item[torder[train_mask[torder]]], x.item[torder]]), x.n_items)
    lut = _encoder(first_items, x.n_items)
    del torder
    full = Sequences(full.offsets, lut[full.items], full.users)

    train_all = _prefix(full, train_len > 0, train_len)
    val = _take_prefix(full, scored, lengths - 2)
    test = _take_prefix(full, scored, lengths - 1)
    stats = _stats(x, cfg, train_all, val, test, len(first_items))
    return PreparedDataset(
        n_items=len(first_items), n_users=x.n_users,
        item_raw_ids=_raw_ids_with_padding(x.item_raw_ids, first_items),
        user_raw_ids=x.user_raw_ids, train=train_all, val=val, test=test,
        test_period=test.inputs, item_counts=_counts(train_all, len(first_items)), stats=stats)


def _rows(seqs: Sequences, keep: np.ndarray) -> Sequences:
    """The rows ``keep`` of ``seqs``."""
    lengths = seqs.lengths()
    mask = np.repeat(keep, lengths)
    return Sequences(np.r_[0, np.cumsum(lengths[keep])].astype(np.int64), seqs.items[mask],
                     seqs.users[keep])


def _counts(train: Sequences, n_items: int) -> np.ndarray:
    return np.bincount(train.items, minlength=n_items + 1).astype(np.int64)


def _stats(x: Interactions, cfg, train: Sequences, val: EvalSplit, test: EvalSplit,
           n_catalog: int) -> dict:
    return dict(
        name=cfg.name, split=cfg.split,
        n_users=x.n_users, n_items=x.n_items, n_interactions=len(x),
        catalog_size=n_catalog,
        n_train_users=len(train), n_train_interactions=int(len(train.items)),
        n_val_users=len(val), n_test_users=len(test),
    )
