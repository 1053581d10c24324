"""Training: the state (``state``), pure jitted steps and the one step builder (``steps``), the
epoch loop with validation, early stopping and results (``loop.train``), Orbax checkpoints
(``checkpoints``), profiling (``profiling``), evaluation of a model or the popularity baseline
(``evaluation``), saved runs (``saved_run``).

``from srs_jax.training import train`` is the entry point; everything else is importable from its
module.
"""

from srs_jax.training.loop import train

__all__ = ["train"]
