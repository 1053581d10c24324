"""``cce`` and ``cce_neg``: the Cut Cross-Entropy kernels of ``pallas_kernels``.

* ``cce``: exact full-softmax CE (same value as ``ce``) without the ``[N, V]`` logits:
  ``pallas_kernels.linear_cross_entropy``.
* ``cce_neg``: CE- with negatives generated inside the kernels (same estimator as ``ce_neg``,
  different random ids): ``pallas_kernels.sampled_linear_cross_entropy``; its seed is drawn
  from the step key. Popularity sampling uses a ``pallas_kernels.popularity_table`` built once
  from the training counts when the loss is built.

Built with a device mesh (``mesh=``), both run vocabulary-parallel
(``pallas_kernels.VocabParallelOptions``) on the model's whole item table as it is sharded
(``reads_table``): class ``c`` is table row ``c + 1``; the padding row 0, a BERT4Rec mask row and
rows padded for even shards take no part.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import pallas_kernels
from srs_jax.config.specs import LossSpec
from srs_jax.losses import samplers
from srs_jax.losses.base import Loss
from srs_jax.losses.common import masked_mean, safe_labels

def kernel_seed(key: jax.Array) -> jax.Array:
    """The uint32 seed of the in-kernel sampler, derived from a JAX key."""
    return jax.random.bits(key, (), jnp.uint32)


def _vocab_parallel(mesh, n_items: int):
    if mesh is None:
        return None
    return pallas_kernels.VocabParallelOptions(mesh, col_start=1, num_classes=int(n_items))


class CutCrossEntropy(Loss):
    """``cce``: full-softmax CE through the CCE kernels."""

    name = "cce"

    def __init__(self, spec: LossSpec, n_items: int, item_counts=None, *, mesh=None):
        del item_counts
        super().__init__(spec, n_items)
        self.impl = spec.impl
        self.vocab_parallel = _vocab_parallel(mesh, n_items)
        # Vocabulary-parallel: the whole sharded table, cast per shard inside the kernels.
        self.reads_table = self.keeps_classifier_dtype = self.vocab_parallel is not None
        if self.reads_table and self.impl == "naive":
            self.impl = "xla"  # the vocabulary-parallel loss has no naive version

    def compute(self, hidden, classifier, labels, where, key):
        del key
        labels = safe_labels(labels, where)
        if self.vocab_parallel is not None:
            return pallas_kernels.linear_cross_entropy(
                hidden, classifier, labels, where=where, reduction="mean", impl=self.impl,
                vocab_parallel=self.vocab_parallel)
        rows = pallas_kernels.linear_cross_entropy(hidden, classifier, labels, where=where,
                                                   reduction="none", impl=self.impl)
        return masked_mean(rows, where)


class SampledCutCrossEntropy(Loss):
    """``cce_neg``: CE- through the CCE- kernels (negatives drawn in-kernel from a seed of the key).

    Reads the classifier in the compute dtype inside its custom VJP and returns dC in the
    classifier's dtype: float32 parameters get its float32 dC buffer as is, where a cast before
    the loss would round dC to bf16 and convert it back (two ``[V, H]`` passes per step).
    """

    name = "cce_neg"
    keeps_classifier_dtype = True

    def __init__(self, spec: LossSpec, n_items: int, item_counts=None, *, mesh=None):
        super().__init__(spec, n_items)
        self.num_negatives, self.sharing, self.impl = int(spec.num_negatives), spec.sharing, spec.impl
        self.vocab_parallel = _vocab_parallel(mesh, n_items)
        self.reads_table = self.vocab_parallel is not None
        self.table = None
        if spec.sampler == "popularity":
            counts = samplers.host_label_counts(item_counts, self.n_items)
            self.table = pallas_kernels.popularity_table(counts)
        if self.reads_table and spec.sharing != "row":
            raise ValueError("vocabulary-parallel cce_neg draws negatives per row: set "
                             "config.loss.sharing='row'")

    def compute(self, hidden, classifier, labels, where, key):
        # reduction="mean" (the mean over ``where`` rows): a scalar loss lets row sharing run the
        # one-pass kernel, which per-row losses cannot.
        return pallas_kernels.sampled_linear_cross_entropy(
            hidden, classifier, safe_labels(labels, where), num_negatives=self.num_negatives,
            seed=kernel_seed(key), sampler=self.table, sharing=self.sharing, where=where,
            reduction="mean", impl=self.impl, vocab_parallel=self.vocab_parallel)
