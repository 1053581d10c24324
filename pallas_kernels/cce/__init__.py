"""Cut Cross-Entropy (CCE): exact softmax cross-entropy over a linear classifier without the
N x V logits.

Modules: ``api`` (``linear_cross_entropy``), ``lse`` (``linear_cross_entropy_fwd`` returning the
log-sum-exp, ``linear_cross_entropy_bwd`` taking one), ``config`` (``CCEConfig``,
``get_default``), ``reference`` (pure JAX: ``naive_row_losses``, ``chunked_row_losses``,
``chunked_lse``, ``chunked_grads``, ``target_logits``). Kernels (private to the family):
``forward.py`` and ``forward_mosaic.py`` (Triton / Mosaic GPU forward), ``backward.py``, driven
by ``ops.py``; tiles and exponentials in ``common.py``. The loss functions are exported from
``pallas_kernels`` (this package's ``__init__`` imports only what sits below
``pallas_kernels.vocab_parallel``, so that no import cycle runs through it).
"""

from pallas_kernels.cce.config import CCEConfig, get_default
from pallas_kernels.cce.reference import (
    chunked_grads,
    chunked_lse,
    chunked_row_losses,
    naive_row_losses,
    target_logits,
)

__all__ = ["CCEConfig", "chunked_grads", "chunked_lse", "chunked_row_losses", "get_default",
           "naive_row_losses", "target_logits"]
