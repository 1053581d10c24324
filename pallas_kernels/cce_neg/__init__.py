"""CCE-: sampled softmax cross-entropy with negatives generated inside the kernels.

Modules: ``api`` (``sampled_linear_cross_entropy`` and its ``_fwd`` / ``_bwd`` halves),
``config`` (``SampledConfig``, ``get_default``), ``sampling`` (the counter-based sampler:
``sampled_negative_ids``, ``PopularityTable``, ``popularity_table``), ``shard`` (the per-shard
kernels of vocabulary parallelism: ``shard_negatives_lse``, ``shard_negatives_grads``) and
``reference`` (gather-based references ``sampled_ce_reference``, ``sampled_ce_reference_np``).
Kernels (private to the family): ``kernels.py`` (forward / backward), ``fused.py`` (the one-pass
row kernel), ``xla_impl.py`` (the pure-JAX path). The loss functions are exported from
``pallas_kernels`` (this package's ``__init__`` imports only what sits below
``pallas_kernels.vocab_parallel``, so that no import cycle runs through it).
"""

from pallas_kernels.cce_neg.config import SampledConfig, get_default
from pallas_kernels.cce_neg.reference import sampled_ce_reference, sampled_ce_reference_np
from pallas_kernels.cce_neg.sampling import (
    PopularityTable,
    build_alias_table,
    expand_ids,
    popularity_table,
    sampled_negative_ids,
)

__all__ = [
    "PopularityTable",
    "SampledConfig",
    "build_alias_table",
    "expand_ids",
    "get_default",
    "popularity_table",
    "sampled_ce_reference",
    "sampled_ce_reference_np",
    "sampled_negative_ids",
]
