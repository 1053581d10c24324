"""A stand-in for the catalog-scale worker process (``python -m experiments.catalog_scale
--worker``), for tests of the parent's bookkeeping: ``cce`` records every point, ``ce`` records
its first point and then dies on an allocation, ``ce_neg`` dies at once without a word on memory."""

from __future__ import annotations

import os
import sys

from srs_jax.experiments import catalog


def main(argv):
    args = dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)
    loss, path = args["losses"], args["points_file"]
    sizes = sorted(int(v) for v in args["catalogs"].split(","))
    where = {"device": "fake-gpu", "backend": "fake", "compute_dtype": "bfloat16"}
    if loss == "ce_neg":
        sys.stderr.write("Segmentation fault\n")
        os._exit(139)
    for i, v in enumerate(sizes):
        if loss == "ce" and i == 1:
            sys.stderr.write("F external/xla/...: RESOURCE_EXHAUSTED: Out of memory while trying "
                             "to allocate 1234 bytes\n")
            sys.stderr.flush()
            os._exit(6)
        catalog.append_jsonl(path, {"loss": loss, "n_items": v, "status": "ok", "error": "",
                                    "median_step_s": 0.01 * (i + 1), "peak_memory_bytes": v, **where})


if __name__ == "__main__":
    main(sys.argv[1:])
