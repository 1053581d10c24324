"""Training: the state (``state``), pure jitted steps and the one step builder (``steps``), the
epoch loop with validation, early stopping and results (``loop.train``), Orbax checkpoints
(``checkpoints``), profiling (``profiling``), evaluation of a model or the popularity baseline
(``evaluation``), saved runs (``saved_run``).

``srs_jax.training.loop.train`` is the entry point. This package imports none of its modules, so
that the commands' cheap checks (``cli``, ``workdir``, ``run_files``) run before JAX loads.
"""
