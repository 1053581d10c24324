"""Loss objects: ``build_loss(spec, n_items=V, item_counts=..., mesh=...)`` once, then
``loss(hidden, classifier, labels, where, *, key)`` in the step (protocol: ``base.Loss``).

Inputs: ``hidden [N, H]`` (compute dtype), ``classifier [V, H]`` (``model.output_embeddings()``,
item ids 1..V; the whole item table when ``loss.reads_table``), ``labels int32[N]`` in ``[0, V)``
(= item id - 1; masked rows may hold anything, e.g. -1), ``where bool[N]`` (rows that count),
``key`` (negatives, SCE buckets, kernel seed). Returns a float32 scalar, the mean over ``where``
rows (0 when none).

Losses (``LossSpec.type``), definitions in their modules:
  ``ce``        full softmax (``full.py``)
  ``ce_neg``    sampled softmax + logQ correction, plain JAX (``sampled.py``)
  ``bce``       1 negative per positive (``sampled.py``)
  ``bce_plus``  ``num_negatives`` negatives (``sampled.py``)
  ``gbce``      gSASRec's calibrated BCE+ (``sampled.py``)
  ``sce``       Scalable Cross-Entropy (``sce.py``)
  ``cce``       full softmax through the CCE kernels (``cut.py``)
  ``cce_neg``   sampled softmax through the CCE- kernels (``cut.py``)

The spec fields (defaults and rules in ``srs_jax.config.specs.LossSpec``): ``num_negatives``,
``sampler`` ('uniform' | 'popularity': q_j ∝ training count, logQ ``-log(n q_j)``), ``sharing``
(negatives per row or shared: 'row' | 'block' for cce_neg, 'row' | 'batch' for ce_neg, bce and
bce_plus, 'row' for gbce; ``srs_jax.config.names``), ``impl`` (cce / cce_neg kernels), ``gbce_t``, ``sce_*``.

``item_counts``: training counts ``int[V + 1]`` by encoded id (``PreparedDataset.item_counts``)
or ``[V]`` by label; popularity sampler only. ``mesh``: a ``(data, vocab)`` device mesh: ``cce``
and ``cce_neg`` then run vocabulary-parallel on the sharded item table; the plain-JAX losses are
partitioned by XLA and need ``vocab == 1``.
"""

from __future__ import annotations

from srs_jax.config.names import KERNEL_LOSSES, LOSS_TYPES
from srs_jax.config.specs import LossSpec
from srs_jax.losses.base import Loss
from srs_jax.losses.cut import CutCrossEntropy, SampledCutCrossEntropy, kernel_seed
from srs_jax.losses.full import FullSoftmax
from srs_jax.losses.sampled import GBCE, BinaryCE, SampledSoftmax
from srs_jax.losses.sce import ScalableCE
from srs_jax.parallel.mesh import VOCAB

LOSSES: dict[str, type] = {
    "ce": FullSoftmax,
    "ce_neg": SampledSoftmax,
    "bce": BinaryCE,
    "bce_plus": BinaryCE,
    "gbce": GBCE,
    "sce": ScalableCE,
    "cce": CutCrossEntropy,
    "cce_neg": SampledCutCrossEntropy,
}
assert tuple(LOSSES) == LOSS_TYPES  # the names are defined once, in srs_jax.config.names


def build_loss(spec: LossSpec, *, n_items: int, item_counts=None, mesh=None) -> Loss:
    """The loss object of ``spec`` for a catalog of ``n_items`` items (see the module docstring).

    ``mesh`` (a ``jax.sharding.Mesh`` with axes ``data`` and ``vocab``) makes cce / cce_neg
    vocabulary-parallel; other losses accept a mesh only when its ``vocab`` axis is 1.
    """
    cls = LOSSES[spec.type]
    if spec.type in KERNEL_LOSSES:
        return cls(spec, n_items, item_counts, mesh=mesh)
    if mesh is not None and mesh.shape.get(VOCAB, 1) > 1:
        raise ValueError(f"loss.type={spec.type!r} has no vocabulary-parallel version: with "
                         "mesh.vocab > 1 use 'cce' or 'cce_neg' (or set mesh.vocab=1)")
    return cls(spec, n_items, item_counts)


__all__ = ["LOSSES", "Loss", "LossSpec", "build_loss", "kernel_seed", "BinaryCE", "CutCrossEntropy",
           "FullSoftmax", "GBCE", "SampledCutCrossEntropy", "SampledSoftmax", "ScalableCE"]
