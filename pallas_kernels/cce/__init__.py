"""Cut Cross-Entropy: exact softmax cross-entropy over a linear classifier without N x V logits.

``linear_cross_entropy`` dispatches to the Pallas kernels (``forward.py``, ``backward.py``) on GPU
and to the exact chunked pure-JAX implementation (``reference.py``) elsewhere.
"""

from pallas_kernels.cce.api import linear_cross_entropy

__all__ = ["linear_cross_entropy"]
