"""Stand-in for the ``srs_jax/losses/cut.py`` hook (docs/distributed.md, patch 5) while neither
trainer hook is applied: ``cce`` / ``cce_neg`` in the loss registry call
``srs_jax.distributed.classifier_hook`` first. Used by the multi-device checks and the GPU smoke
script only; a no-op once ``cut.py`` or ``steps.py`` carries a hook."""

from __future__ import annotations

import inspect

from srs_jax import distributed as dist
from srs_jax import losses as losses_lib
from srs_jax.training import steps as steps_lib


def install_cut_standin():
    """Stand-in for the srs_jax/losses/cut.py patch (docs/distributed.md) while it is not applied:
    cce / cce_neg call ``dist.classifier_hook`` first."""
    from srs_jax.losses import cut

    if "classifier_hook" in inspect.getsource(cut) or "loss_hook" in inspect.getsource(steps_lib):
        return
    for name in ("cce", "cce_neg"):
        base = losses_lib.LOSSES[name]

        def wrapped(cfg, hidden, classifier, labels, where, *, key=None, item_counts=None,
                    _base=base):
            out = dist.classifier_hook(cfg, hidden, classifier, labels, where, key=key)
            if out is not None:
                return out
            return _base(cfg, hidden, classifier, labels, where, key=key, item_counts=item_counts)

        losses_lib.LOSSES[name] = wrapped
