"""Every field of a run config, with the reference system's defaults (SASRec, Adam 1e-3).

Run (synthetic data, CCE): python -m experiments.train --config configs/base.py --workdir /tmp/run
Any field can be overridden: --config.train.batch_size=512 --config.loss.type=ce

The defaults and the rules every field must follow live in ``srs_jax/config/specs.py`` (one
frozen dataclass per section); ``srs_jax.config.load_specs`` checks a config once, at start-up.

* ``seed``: model init, dropout, negatives and data order all derive from it.
* ``data``: ``srs_jax.config.dataset_config(name)`` (fields in ``srs_jax/config/defaults.py``),
  including ``time_until`` (Unix seconds; later rows are dropped, for an older snapshot).
* ``model``: ``name`` ('sasrec' | 'bert4rec'), ``hidden``, ``num_blocks``, ``num_heads``,
  ``dropout``, ``max_len``, ``compute_dtype`` ('auto' = bfloat16 on GPU, float32 on CPU;
  parameters are always float32); BERT4Rec only: ``mask_prob``, ``last_item_mask_prob``,
  ``head_transform``.
* ``loss``: ``type`` (ce, ce_neg, bce, bce_plus, gbce, sce, cce, cce_neg), ``num_negatives``,
  ``sampler`` ('uniform' | 'popularity'), ``sharing`` ('row' | 'batch' for the plain-JAX sampled
  losses, 'row' | 'block' for cce_neg), ``impl`` ('auto' | 'pallas' | 'interpret' | 'xla' |
  'naive'), ``gbce_t``, ``sce_*`` (SCE buckets; ``sce_item_chunk`` catalog rows scored at a
  time).
* ``train``: ``batch_size``, ``lr``, ``b1``, ``b2``, ``eps``, ``max_epochs``, ``patience``
  (epochs without a strict val improvement), ``warmup_steps``, ``schedule`` ('constant' |
  'cosine'), ``grad_clip`` (0 = off), ``eval_batch_size``, ``prefetch`` (blocks of 16 batches
  queued on the device; batches on a mesh), ``log_every`` (steps between progress-bar / NaN
  checks), ``window_stride`` (None = one window per user, the reference; k = sliding windows),
  ``max_train_seconds`` (0 = no limit; else no new epoch starts after this many seconds of the
  run and the best checkpoint is evaluated),
  ``checkpoint_every_steps`` (0 = the latest checkpoint at epoch ends only; k = also every k
  steps inside an epoch, and ``--resume`` continues from that step).
* ``eval``: ``ks``, ``metrics``, ``monitor`` (the val metric for early stopping and the best
  checkpoint), ``coverage_mode`` ('reference' | 'conventional'), ``user_chunk`` x
  ``item_chunk`` (largest score block in the top-K search), ``popularity_baseline``.
* ``mesh``: devices (``srs_jax/parallel/mesh.py``): ``enabled`` (default True: all local devices
  on ``data``; False: one device), ``data``, ``vocab`` (item-table shards), multi-host
  ``coordinator_address`` / ``num_processes`` / ``process_id``.
* ``workdir``: run directory ('' = must be given with --workdir).
"""

from __future__ import annotations

import ml_collections

from srs_jax.config import run_config


def get_config(dataset: str = "synthetic") -> ml_collections.ConfigDict:
    return run_config(dataset)
