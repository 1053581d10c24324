"""The two small real datasets of ../shared/data (skipped where the folder is absent)."""

from pathlib import Path

import numpy as np
import pytest

from srs_jax.data import dataset_config, last_items, prepare_dataset, training_windows

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"

# (config name, file, users, items, interactions) from ../shared/data/README.md.
REAL = [
    ("amazon_sports", "amazon_sports_s3rec.txt", 35_598, 18_357, 296_337),
    ("amazon_video_games", "amazon_video_games_sasrec.txt", 31_013, 23_715, 287_107),
]


@pytest.mark.parametrize("name,file,n_users,n_items,n_rows", REAL)
def test_real_file_leave_one_out(tmp_path, name, file, n_users, n_items, n_rows):
    path = SHARED / file
    if not path.is_file():
        pytest.skip(f"{path} not present")
    cfg = dataset_config(name)
    cfg.path, cfg.cache_dir = str(path), str(tmp_path)
    ds = prepare_dataset(cfg)
    s = ds.stats
    assert (s["n_users"], s["n_items"], s["n_interactions"]) == (n_users, n_items, n_rows)
    assert ds.n_items == n_items  # leave-one-out catalog: every item
    # Every user with 3+ items is scored; the three parts add up to all interactions.
    lengths = np.bincount(np.repeat(ds.train.users, ds.train.lengths()), minlength=ds.n_users)
    assert s["n_test_users"] == s["n_val_users"] == len(ds.test)
    assert lengths.sum() + 2 * len(ds.test) == n_rows
    np.testing.assert_array_equal(ds.val.inputs.items, ds.train.items[np.isin(
        np.repeat(ds.train.users, ds.train.lengths()), ds.val.users)])
    # Test input = validation input + validation target, per user.
    np.testing.assert_array_equal(ds.test.inputs.lengths(), ds.val.inputs.lengths() + 1)
    np.testing.assert_array_equal(ds.test.inputs.items[ds.test.inputs.offsets[1:] - 1],
                                  ds.val.targets)
    # Raw ids: the file's first line's user reads back from its encoded ids.
    first = path.read_text().split("\n", 1)[0].split()
    row0 = np.searchsorted(ds.user_raw_ids, int(first[0]))
    r = np.searchsorted(ds.train.users, row0)
    assert [str(i) for i in ds.item_raw_ids[ds.train.row(r)][:1]] == [first[1]]
    # Batches of the right shape and content.
    x, y = training_windows(ds.train, 50)
    assert x.shape == (len(ds.train), 50) and (y[:, -1] > 0).all()
    h = last_items(ds.test.inputs, 50)
    assert (h[:, -1] == ds.val.targets).all()
