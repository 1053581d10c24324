"""Catalog-scale study: peak memory and step time of SASRec training for CE, CE-, CCE, CCE-.

    python -m experiments.catalog_scale --out results/catalog_scale.json          # GPU, Zvuk shape
    python -m experiments.catalog_scale --small --out /tmp/catalog_small.json      # CPU check

Defaults: batch 1024, length 128, hidden 256 (the reference's Zvuk shape), 2047 negatives for the
sampled losses, catalogs 1e4, 1e5, 1e6, 1e7 items, 5 timed steps after 1 warm-up step. Random
item ids are drawn on the device (no dataset). ``--small``: batch 8, length 16, hidden 32, 15
negatives, catalogs 1e2..1e4 (CPU). Any run-config field: --config.loss.sharing=batch etc.
Tables and plots: python -m experiments.report --out DIR <the JSON>.
"""

from __future__ import annotations

import os

from absl import flags
from ml_collections import config_flags

from srs_jax.training import cli as _cli
from srs_jax.experiments import catalog

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "..", "configs", "base.py"),
    "Run config for the model/loss/optimizer fields (shape fields are set by this command).")
_OUT = flags.DEFINE_string("out", "results/catalog_scale.json", "Output JSON.")
_SMALL = flags.DEFINE_bool("small", False, "Tiny shapes and catalogs for a CPU check.")
_LOSSES = flags.DEFINE_list("losses", list(catalog.LOSSES), "Losses to measure.")
_CATALOGS = flags.DEFINE_list("catalogs", None, "Catalog sizes (default 1e4,1e5,1e6,1e7; "
                              "--small: 1e2,1e3,1e4).")
_BATCH = flags.DEFINE_integer("batch_size", None, "Batch size (default 1024; --small 8).")
_LEN = flags.DEFINE_integer("max_len", None, "Sequence length (default 128; --small 16).")
_HIDDEN = flags.DEFINE_integer("hidden", None, "Hidden size (default 256; --small 32).")
_NEG = flags.DEFINE_integer("num_negatives", None, "Negatives of ce_neg/cce_neg (default 2047).")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps per point.")
_WARMUP = flags.DEFINE_integer("warmup", 1, "Untimed steps after compilation.")
_ISOLATE = flags.DEFINE_enum("isolate", "loss", ["loss", "none"],
                             "loss: one process per loss (honest peak memory); none: this process.")
_BUDGET = flags.DEFINE_float("time_budget_s", None, "Start no new point after this many seconds.")
# Internal: a per-loss worker process.
_WORKER = flags.DEFINE_bool("worker", False, "Internal: measure --losses into --points_file.")
_POINTS = flags.DEFINE_string("points_file", None, "Internal: JSONL the worker appends to.")


def _shape() -> dict:
    shape = dict(catalog.SMALL_SHAPE if _SMALL.value else catalog.ZVUK_SHAPE)
    for key, flag in (("batch_size", _BATCH), ("max_len", _LEN), ("hidden", _HIDDEN),
                      ("num_negatives", _NEG)):
        if flag.value is not None:
            if flag.value < 1:
                raise ValueError(f"--{key}={flag.value} must be a positive integer")
            shape[key] = flag.value
    return shape


def _catalogs() -> list[int]:
    if not _CATALOGS.value:
        return list(catalog.SMALL_CATALOGS if _SMALL.value else catalog.CATALOGS)
    try:
        return [int(float(v)) for v in _CATALOGS.value]
    except ValueError:
        raise ValueError(f"--catalogs={','.join(_CATALOGS.value)}: give numbers, e.g. 1e4,1e5") from None


def _forwarded_flags() -> list[str]:
    """The flags a worker needs to rebuild the same config and shape (``--f=v`` or ``--f v``)."""
    import sys

    keep = ("--config", "--small", "--nosmall", "--batch_size", "--max_len", "--hidden",
            "--num_negatives")
    args, out = sys.argv[1:], []
    for i, a in enumerate(args):
        if a.split("=")[0].startswith(keep):
            out.append(a)
            if "=" not in a and i + 1 < len(args) and not args[i + 1].startswith("-") \
                    and a not in ("--small", "--nosmall"):
                out.append(args[i + 1])
    return out


def main(argv):
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments {argv[1:]}: see --help")
    if _STEPS.value < 1 or _WARMUP.value < 0:
        raise ValueError("--steps must be >= 1 and --warmup >= 0")
    if _WORKER.value:
        import time

        deadline = time.time() + _BUDGET.value if _BUDGET.value is not None else None
        for loss in _LOSSES.value:
            catalog.run_loss(_CONFIG.value, loss, _catalogs(), shape=_shape(), steps=_STEPS.value,
                             warmup=_WARMUP.value, deadline=deadline,
                             emit=lambda r: catalog.append_jsonl(_POINTS.value, r))
        return
    out = os.path.abspath(_OUT.value)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    result = catalog.run_study(_CONFIG.value, losses=_LOSSES.value, catalogs=_catalogs(),
                               shape=_shape(), steps=_STEPS.value, warmup=_WARMUP.value,
                               isolate=_ISOLATE.value, out_path=out,
                               time_budget_s=_BUDGET.value, worker_args=_forwarded_flags())
    from srs_jax.experiments import tables

    print(tables.to_markdown(tables.catalog_rows(result), tables.CATALOG_COLUMNS))
    print(f"[catalog] wrote {out}")


if __name__ == "__main__":
    _cli.run_main(main)
