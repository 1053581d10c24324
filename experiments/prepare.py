"""Prepares (filters, splits, encodes, caches) the dataset of a config and prints its statistics.

    python -m experiments.prepare --config configs/<name>.py [--config.data.min_item_count=10 ...]

The config file defines ``get_config()`` returning an ``ml_collections.ConfigDict`` with a
``data`` field (``srs_jax.data.dataset_config(...)``). ``--config.data.<key>=<value>`` overrides
any field; an unknown key fails at start-up. Errors (a missing, empty or unreadable raw file, a
bad value) print one line starting ``error:`` (--debug: traceback). The last output line is a JSON object with
``n_users, n_items, n_interactions`` (after filtering) and ``n_train_users, n_val_users,
n_test_users`` (scored users of each split).
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from srs_jax.data import prepare_dataset
from srs_jax.training import cli as _cli

_CONFIG = _cli.define_config_file("config", None, "Config file with get_config() (configs/*.py).",
                                  lock_config=True)

SUMMARY_KEYS = ("n_users", "n_items", "n_interactions", "n_train_users", "n_val_users",
                "n_test_users")


def _length_line(name: str, lengths: np.ndarray) -> str:
    if len(lengths) == 0:
        return f"  {name:<12} 0 users"
    return (f"  {name:<12} {len(lengths):>10,} users  length mean {lengths.mean():8.1f}  "
            f"median {np.median(lengths):6.0f}  max {lengths.max():7,}")


def summary_lines(ds, seconds: float) -> list[str]:
    """Readable summary of a PreparedDataset."""
    s = ds.stats
    lines = [
        f"dataset {s['name']}  split {s['split']}  prepared/loaded in {seconds:.2f}s",
        f"  after filtering: {s['n_users']:,} users, {s['n_items']:,} items, "
        f"{s['n_interactions']:,} interactions",
        f"  catalog V = {ds.n_items:,} items (ids 1..V, 0 = padding); "
        f"{s['n_train_interactions']:,} training interactions",
        _length_line("train", ds.train.lengths()),
        _length_line("validation", ds.val.inputs.lengths()),
        _length_line("test", ds.test.inputs.lengths()),
    ]
    if "time_threshold" in s:
        lines.append(f"  time threshold {s['time_threshold']}; test-period users "
                     f"{s['n_test_period_users']:,} (scored: {s['n_test_users']:,})")
    return lines


def main(argv) -> None:
    if len(argv) > 1:
        raise _cli.UsageError(f"unexpected arguments: {argv[1:]}")
    config = _CONFIG.value
    if config is None or "data" not in config:
        raise _cli.UsageError("--config must name a config file whose get_config() has a .data "
                              "field, e.g. --config configs/synthetic_cce.py")
    start = time.perf_counter()
    ds = prepare_dataset(config.data)
    for line in summary_lines(ds, time.perf_counter() - start):
        print(line)
    print(json.dumps({k: int(ds.stats[k]) for k in SUMMARY_KEYS}))
    sys.stdout.flush()


if __name__ == "__main__":
    _cli.run_main(main, doc=__doc__)
