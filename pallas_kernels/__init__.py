"""Cut Cross-Entropy (CCE) and sampled CCE (CCE-) as Pallas kernels behind ``jax.custom_vjp``.

* ``linear_cross_entropy``: exact softmax cross-entropy over a whole catalog without materialising
  the ``N x V`` logits (``pallas_kernels.cce``).
* ``sampled_linear_cross_entropy``: sampled softmax with negatives generated inside the kernels
  (``pallas_kernels.cce_neg``).

Each kernel sits beside a plain-JAX reference used by the tests. This package never imports
``srs_jax``.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "linear_cross_entropy": "pallas_kernels.cce",
    "sampled_linear_cross_entropy": "pallas_kernels.cce_neg",
    "sampled_negative_ids": "pallas_kernels.cce_neg",
    "build_alias_table": "pallas_kernels.cce_neg",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    # Lazy: importing one kernel family does not compile or import the other.
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pallas_kernels' has no attribute {name!r}")
