"""Cut Cross-Entropy (CCE) and sampled CCE (CCE-) as Pallas kernels behind ``jax.custom_vjp``.

* ``linear_cross_entropy`` (+ ``_fwd`` returning the log-sum-exp, ``_bwd`` taking one,
  ``CCEConfig``): exact softmax cross-entropy over a whole catalog without materialising the
  ``N x V`` logits (``pallas_kernels.cce``).
* ``sampled_linear_cross_entropy`` (+ ``_fwd``, ``_bwd``, ``SampledConfig``): sampled softmax
  with negatives generated inside the kernels; ``popularity_table`` / ``PopularityTable`` for
  popularity sampling, ``sampled_negative_ids`` for the ids drawn (``pallas_kernels.cce_neg``).
* ``VocabParallelOptions``: either loss with the classifier rows sharded over a mesh axis
  (``vocab_parallel=``); ``shard_map``: the jax-version shim it uses
  (``pallas_kernels.vocab_parallel``).
* References in plain JAX / numpy: ``linear_cross_entropy_reference`` (materialised logits),
  ``sampled_ce_reference``, ``sampled_ce_reference_np``.

This package never imports ``srs_jax``.
"""

from pallas_kernels.cce.api import (
    linear_cross_entropy,
    linear_cross_entropy_bwd,
    linear_cross_entropy_fwd,
)
from pallas_kernels.cce.config import CCEConfig
from pallas_kernels.cce.reference import naive_row_losses as linear_cross_entropy_reference
from pallas_kernels.cce_neg.api import (
    sampled_linear_cross_entropy,
    sampled_linear_cross_entropy_bwd,
    sampled_linear_cross_entropy_fwd,
)
from pallas_kernels.cce_neg.config import SampledConfig
from pallas_kernels.cce_neg.reference import sampled_ce_reference, sampled_ce_reference_np
from pallas_kernels.cce_neg.sampling import (
    PopularityTable,
    popularity_table,
    sampled_negative_ids,
)
from pallas_kernels.vocab_parallel import VocabParallelOptions, shard_map

__all__ = [
    "CCEConfig",
    "PopularityTable",
    "SampledConfig",
    "VocabParallelOptions",
    "linear_cross_entropy",
    "linear_cross_entropy_bwd",
    "linear_cross_entropy_fwd",
    "linear_cross_entropy_reference",
    "popularity_table",
    "sampled_ce_reference",
    "sampled_ce_reference_np",
    "sampled_linear_cross_entropy",
    "sampled_linear_cross_entropy_bwd",
    "sampled_linear_cross_entropy_fwd",
    "sampled_negative_ids",
    "shard_map",
]
