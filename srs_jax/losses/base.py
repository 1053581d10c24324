"""The protocol every loss object follows (built once by ``srs_jax.losses.build_loss``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from srs_jax.config.specs import LossSpec
from srs_jax.losses.common import check_shapes


class Loss:
    """A training loss over item scores ``hidden @ classifier.T``, configured at construction.

    Call: ``loss(hidden [N, H], classifier, labels int32[N], where bool[N], *, key) -> f32``, the
    mean over ``where`` rows (0 when none). ``labels`` are in ``[0, V)`` (item id - 1); masked rows
    may hold anything. ``key`` draws negatives, SCE buckets or the kernel seed.

    ``classifier`` is the model's ``output_embeddings()`` ``[V, H]`` (item ids 1..V), unless
    ``reads_table`` is True: then it is the model's whole item table ``[R, H]`` (row ``v`` = item
    ``v``; vocabulary-parallel losses read it as it is sharded). The classifier is cast to
    ``hidden.dtype`` first, unless ``keeps_classifier_dtype`` (the loss casts inside its own VJP so
    that its classifier gradient stays in the parameters' dtype).
    """

    name: str = ""
    reads_table: bool = False
    keeps_classifier_dtype: bool = False

    def __init__(self, spec: LossSpec, n_items: int, item_counts=None):
        """Every loss is built from its spec, the catalog size and (popularity sampling) the
        training counts ``int[V + 1]`` by encoded id or ``[V]`` by label."""
        del item_counts
        self.spec = spec
        if n_items < 1:
            raise ValueError(f"n_items={n_items}: the catalog must hold at least one item")
        self.n_items = int(n_items)

    def __call__(self, hidden: jax.Array, classifier: jax.Array, labels: jax.Array, where: jax.Array,
                 *, key: jax.Array) -> jax.Array:
        labels = jnp.asarray(labels)
        where = jnp.asarray(where).astype(bool)
        check_shapes(hidden, classifier, labels, where)
        if not self.reads_table and classifier.shape[0] != self.n_items:
            raise ValueError(f"classifier has {classifier.shape[0]} rows but the loss was built for "
                             f"{self.n_items} items: build it with the dataset's n_items")
        if not self.keeps_classifier_dtype:
            classifier = classifier.astype(hidden.dtype)
        return self.compute(hidden, classifier, labels, where, key).astype(jnp.float32)

    def compute(self, hidden, classifier, labels, where, key) -> jax.Array:
        """The loss on checked inputs (each loss overrides it)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, n_items={self.n_items})"
