"""The reference's grid search (batch size x max length x negatives), resumable.

    python -m experiments.grid_search --config configs/zvuk_cce_neg.py --config.loss.sharing=row \\
        --out runs/grid_zvuk \\
        [--grid.batch_size=256,512 --grid.max_len=64,128 --grid.num_negatives=511,2047] \\
        [--config.train.max_epochs=5] [--csv FILE] [--retry_failed] [--noisolate]

Each point trains into ``<out>/runs/bs<B>_sl<L>_nn<N>_seed<S>`` and appends one row to
``<out>/grid.csv`` (default): ``status`` is ok / oom / nonfinite / error. Rerunning the same
command skips the points already in the CSV. Defaults: MemoryEfficientSRS's grid.
"""

from __future__ import annotations

import os

from absl import flags
from srs_jax.training import cli as _cli
from srs_jax.experiments import grid as grid_lib

_CONFIG = _cli.define_config_file(
    "config", os.path.join(os.path.dirname(__file__), "..", "configs", "synthetic_cce.py"),
    "Base run config (configs/*.py); override fields with --config.<field>=<value>.")
_GRID = _cli.define_config_dict(
    "grid", grid_lib.default_grid(), "Grid lists: --grid.batch_size=16,32 --grid.max_len=... "
    "--grid.num_negatives=... --grid.launches=1.")
_OUT = flags.DEFINE_string("out", None, "Output folder: grid.csv and runs/<point>/ "
                           "(default <config.workdir>_grid).")
_CSV = flags.DEFINE_string("csv", None, "Results CSV (default <out>/grid.csv).")
_RETRY = flags.DEFINE_bool("retry_failed", False, "Rerun points recorded as oom / error.")
_ISOLATE = flags.DEFINE_bool(
    "isolate", True, "Train each point in its own process (per-point peak memory; default). "
    "--noisolate runs all in this process: faster start, but peak memory is the process's.")
_TRAIN_FN = flags.DEFINE_string("train_fn", "srs_jax.training.loop:train",
                                "module:function of train(config, workdir, resume).")
# Internal: how a point's child process is started (isolate=True).
_WORKER = flags.DEFINE_bool("worker", False, "Internal: run one point (--point_config, --workdir).")
_POINT_CONFIG = flags.DEFINE_string("point_config", None, "Internal: a point's config JSON.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Internal: a point's run directory.")


def main(argv):
    if len(argv) > 1:
        raise _cli.UsageError(f"unexpected arguments {argv[1:]}: use --config, --grid.*, --out")
    if _WORKER.value:
        raise SystemExit(grid_lib.run_worker(_POINT_CONFIG.value, _WORKDIR.value, _TRAIN_FN.value))
    workdir = _CONFIG.value.get("workdir")
    out = _OUT.value or (f"{workdir.rstrip('/')}_grid" if workdir else None)
    if not out:
        raise _cli.UsageError("no output folder: pass --out DIR")
    summary = grid_lib.run_grid(_CONFIG.value, _GRID.value, out, csv_path=_CSV.value,
                                train_fn=_TRAIN_FN.value, isolate=_ISOLATE.value,
                                retry_failed=_RETRY.value)
    print(f"[grid] {len(summary.ran)} points run {summary.statuses}, {len(summary.skipped)} "
          f"already in {summary.csv_path}; tables: python -m experiments.report {summary.csv_path}")


if __name__ == "__main__":
    _cli.run_main(main, doc=__doc__)
