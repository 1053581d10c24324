"""Training: pure jitted steps (``steps``), the epoch loop with validation, early stopping and
results (``loop.train``), Orbax checkpoints (``checkpoints``), profiling (``profiling``),
evaluation of a model or the popularity baseline (``evaluation``), saved runs (``saved_run``).

``from srs_jax.training import train`` is the entry point; everything else is importable from its
module.
"""


def train(config, workdir=None, resume=False):
    """See ``srs_jax.training.loop.train`` (imported lazily: loading a config needs no JAX)."""
    from srs_jax.training.loop import train as _train

    return _train(config, workdir, resume=resume)


__all__ = ["train"]
