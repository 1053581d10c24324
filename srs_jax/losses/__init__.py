"""Loss registry: ``compute_loss(loss_config, hidden, classifier, labels, where, *, key, item_counts)``.

Inputs: ``hidden [N, H]`` (compute dtype), ``classifier [V, H]`` (item rows of ids 1..V, in the
parameters' dtype: ``compute_loss`` casts it to ``hidden.dtype``, except for the losses in
``KEEP_CLASSIFIER_DTYPE``, which cast inside their own VJP so that their classifier gradient
stays in the parameters' dtype),
``labels int32[N]`` in ``[0, V)`` (= item id - 1; masked rows may hold anything, e.g. -1),
``where bool[N]`` (rows that count), ``key`` (negatives, SCE buckets, kernel seed),
``item_counts`` (training counts ``int[V + 1]`` by encoded id, or ``[V]`` by label; popularity
sampler only). Returns a float32 scalar, the mean over ``where`` rows (0 when none).

Losses (``loss_config.type``), definitions in their modules:
  ``ce``        full softmax (``full.py``)
  ``ce_neg``    sampled softmax + logQ correction, plain JAX (``sampled.py``)
  ``bce``       1 negative per positive (``sampled.py``)
  ``bce_plus``  ``num_negatives`` negatives (``sampled.py``)
  ``gbce``      gSASRec's calibrated BCE+ (``sampled.py``)
  ``sce``       Scalable Cross-Entropy (``sce.py``)
  ``cce``       full softmax through the CCE kernels (``cut.py``)
  ``cce_neg``   sampled softmax through the CCE- kernels (``cut.py``)

Loss config fields (``ml_collections.ConfigDict`` or dict; missing optional ones take the default):
  type           one of the names above (required)
  num_negatives  negatives per row for ce_neg, bce_plus, gbce, cce_neg (required there; bce uses 1)
  sampler        'uniform' | 'popularity' (q_j ∝ training count, logQ ``-log(n q_j)``); default 'uniform'
  sharing        'row' (own negatives per row) | 'batch' (one set for all rows) | 'block' (cce_neg
                 only: one set per row tile); default 'row'
  impl           cce/cce_neg kernel implementation: 'auto' | 'pallas' | 'xla' (cce also 'naive'); default 'auto'
  dc_accum       cce_neg, Pallas row sharing: dtype of the atomically accumulated dC, 'float32' |
                 'bfloat16' (1.5-1.8x faster loss, partial sums rounded to bf16); default 'float32'
  row_sampling   cce_neg, uniform row sharing: 'independent' (hash per row and slot) |
                 'permutation' (deterministic, atomic-free dC; slower); default 'independent'
  gbce_t         gBCE calibration t in [0, 1]; default 0.75
  sce_n_buckets, sce_bucket_size_x, sce_bucket_size_y   SCE buckets / rows / items per bucket;
                 defaults 443, 443, 512 (the reference's)
  sce_mix_x      SCE centres as random mixtures of the batch outputs (True) or pure noise; default True
  sce_item_chunk catalog rows scored at a time when SCE picks items per bucket; default 65536
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from srs_jax.losses.common import check_shapes, option
from srs_jax.losses.cut import cce, cce_neg
from srs_jax.losses.full import ce
from srs_jax.losses.sampled import bce, bce_plus, ce_neg, gbce
from srs_jax.losses.sce import sce

LOSSES: dict[str, Callable] = {
    "ce": ce,
    "ce_neg": ce_neg,
    "bce": bce,
    "bce_plus": bce_plus,
    "gbce": gbce,
    "sce": sce,
    "cce": cce,
    "cce_neg": cce_neg,
}

# cce_neg reads the classifier in the compute dtype inside its custom VJP and returns dC in the
# classifier's dtype: float32 parameters get its float32 dC buffer as is, where a cast before
# the loss would round dC to bf16 and convert it back (two [V, H] passes per step).
KEEP_CLASSIFIER_DTYPE = frozenset({"cce_neg"})


def compute_loss(loss_config, hidden: jax.Array, classifier: jax.Array, labels: jax.Array, where: jax.Array,
                 *, key: jax.Array, item_counts=None) -> jax.Array:
    """The loss ``loss_config.type`` as a float32 scalar (mean over ``where`` rows)."""
    name = option(loss_config, "type")
    if name not in LOSSES:
        raise ValueError(f"unknown loss type {name!r}: set loss.type to one of {sorted(LOSSES)}")
    labels = jnp.asarray(labels)
    where = jnp.asarray(where).astype(bool)
    check_shapes(hidden, classifier, labels, where)
    if name not in KEEP_CLASSIFIER_DTYPE:
        classifier = classifier.astype(hidden.dtype)
    fn = LOSSES[name]
    return fn(loss_config, hidden, classifier, labels, where, key=key, item_counts=item_counts).astype(jnp.float32)


__all__ = ["KEEP_CLASSIFIER_DTYPE", "LOSSES", "compute_loss"]
