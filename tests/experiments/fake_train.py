"""A fake ``train(config, workdir, resume)`` for grid tests (importable by a child process).

Its behaviour is a function of the point: batch size 999 runs out of host memory (a real
``MemoryError`` from numpy), max_len 777 raises XLA's RESOURCE_EXHAUSTED error, max_len 666
raises a plain bug, max_len 555 kills the process; anything else writes a results.json. Every call is logged to
``$FAKE_TRAIN_LOG`` (one line per call) so tests can count what actually trained.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from tests.experiments import fake_runs


def train(config, workdir, resume=False):
    log = os.environ.get("FAKE_TRAIN_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"{config.train.batch_size},{config.model.max_len},{config.loss.num_negatives},"
                    f"{config.seed},{int(resume)}\n")
    if config.train.batch_size == 999:
        np.ones((1 << 46,), np.float64)  # 512 TiB: numpy raises MemoryError (_ArrayMemoryError)
    if config.model.max_len == 777:
        import jax

        raise jax.errors.JaxRuntimeError(
            "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 123456789 bytes.")
    if config.model.max_len == 555:  # a hard crash (segfault, killed): no exception, no status
        sys.stderr.write("fatal: the process is going away\n")
        sys.stderr.flush()
        os._exit(9)
    if config.model.max_len == 666:
        raise KeyError("a bug that is not an OOM")
    rng = np.random.default_rng(config.train.batch_size * 1000 + config.model.max_len)
    res = fake_runs.fake_results(rng, dataset=config.data.name,
                                 peak_bytes=int(rng.integers(1, 8)) * 2**30)
    return fake_runs.write_run(workdir, config, res)
