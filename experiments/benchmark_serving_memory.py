"""Peak memory of one call of an exported serving function on a large random catalog (CPU).

    /usr/bin/time -v python -m experiments.benchmark_serving_memory N_ITEMS BATCH ITEM_CHUNK

An untrained SASRec (hidden 64, max_len 32) over ``N_ITEMS`` items, exported for cpu with the
given item chunk and called twice on ``BATCH`` random histories; compare "Maximum resident set
size" across chunk sizes (a chunk >= N_ITEMS scores the whole catalog in one block).
"""

import sys
import time

import jax
import numpy as np
from flax import nnx

from srs_jax.config.presets import synthetic_config
from srs_jax import export as export_lib
from srs_jax import models
from srs_jax.training import steps


def main():
    n_items, batch, chunk = (int(x) for x in sys.argv[1:4])
    c = synthetic_config("cce")
    c.model.hidden, c.model.max_len, c.model.compute_dtype = 64, 32, "float32"
    graphdef, state = steps.split_model(models.build_model(c.model, n_items,
                                                           rngs=nnx.Rngs(params=0, dropout=1)))
    fn, weights = export_lib.serving_function(graphdef, state, c.model, k=10, item_chunk=chunk)
    exported, _ = export_lib.export_function(fn, weights, 32, platforms=("cpu",))
    del graphdef, state
    hist = np.random.default_rng(0).integers(0, n_items + 1, (batch, 32)).astype(np.int32)
    for name in ("first", "second"):
        t = time.perf_counter()
        ids, _ = exported.call(*weights, hist)
        jax.block_until_ready(ids)
        print(f"{name} call {time.perf_counter() - t:.1f}s, ids {ids.shape}")


if __name__ == "__main__":
    main()
