"""CCE-: sampled softmax cross-entropy with negatives generated inside the kernels.

Public API: ``sampled_linear_cross_entropy`` (loss), ``sampled_negative_ids`` (the ids it
draws), ``build_alias_table`` / ``popularity_table`` (popularity sampling), and the references.
"""

from pallas_kernels.cce_neg.api import sampled_linear_cross_entropy
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
    "build_alias_table",
    "expand_ids",
    "popularity_table",
    "sampled_ce_reference",
    "sampled_ce_reference_np",
    "sampled_linear_cross_entropy",
    "sampled_negative_ids",
]
