"""Every field of a run config, with the reference system's defaults (SASRec, Adam 1e-3).

Run (synthetic data, CCE): python -m experiments.train --config configs/base.py --workdir /tmp/run
Any field can be overridden: --config.train.batch_size=512 --config.loss.type=ce

* ``seed``: model init, dropout, negatives and data order all derive from it.
* ``data``: ``srs_jax.data.dataset_config(name)`` (see ``srs_jax/data/config.py``).
* ``model``: ``name`` ('sasrec' | 'bert4rec'), ``hidden``, ``num_blocks``, ``num_heads``,
  ``dropout``, ``max_len``, ``compute_dtype`` ('auto' = bfloat16 on GPU, float32 on CPU;
  parameters are always float32).
* ``loss``: ``type`` (ce, ce_neg, bce, bce_plus, gbce, sce, cce, cce_neg), ``num_negatives``,
  ``sampler`` ('uniform' | 'popularity'), ``sharing`` ('row' | 'block' | 'batch', CCE-),
  ``impl`` ('auto' | 'pallas' | 'xla' | 'naive'), ``gbce_t``, ``sce_*`` (SCE buckets).
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
* ``mesh``: devices (``srs_jax/distributed/mesh.py``): ``enabled`` (default True: all local devices on
  ``data``; False: one device), ``data``,
  ``vocab`` (item-table shards), multi-host ``coordinator_address`` / ``num_processes`` /
  ``process_id``, ``lookup`` ('auto' | 'xla' | 'shard_map': input lookup from a vocab-sharded
  table, ``srs_jax/distributed/lookup.py``).
* ``workdir``: run directory ('' = must be given with --workdir).
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from srs_jax.data.config import dataset_config

LOSS_TYPES = ("ce", "ce_neg", "bce", "bce_plus", "gbce", "sce", "cce", "cce_neg")


def get_config(dataset: str = "synthetic") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 42
    c.data = dataset_config(dataset)

    c.model = ml_collections.ConfigDict(dict(
        name="sasrec", hidden=256, num_blocks=2, num_heads=2, dropout=0.1, max_len=128,
        compute_dtype="auto"))

    c.loss = ml_collections.ConfigDict(dict(
        type="cce", num_negatives=0, sampler="uniform", sharing="row", impl="auto",
        # cce_neg kernels (pallas_kernels.sampled_linear_cross_entropy): dC accumulation dtype and
        # the uniform row sampler (docs/perf_sampled.md).
        dc_accum="float32", row_sampling="independent",
        gbce_t=0.75,
        # SCE (reference §4.5): buckets of random mixtures of batch outputs.
        sce_n_buckets=443, sce_bucket_size_x=443, sce_bucket_size_y=512, sce_mix_x=True))

    c.train = ml_collections.ConfigDict(dict(
        batch_size=256, lr=1e-3, b1=0.9, b2=0.98, eps=1e-8, max_epochs=20, patience=4,
        warmup_steps=0, schedule="constant", grad_clip=0.0, eval_batch_size=1024, prefetch=2,
        log_every=50, window_stride=config_dict.placeholder(int), max_train_seconds=0.0,
        checkpoint_every_steps=0))

    c.eval = ml_collections.ConfigDict(dict(
        ks=(1, 5, 10, 20, 100),
        metrics=("ndcg", "hitrate", "mrr", "recall", "precision", "map"),
        monitor="ndcg@10",
        coverage_mode="reference",
        user_chunk=4096,
        item_chunk=65536,
        popularity_baseline=True))

    # Several devices (docs/distributed.md): by default every local device is on the data axis
    # (one device: the plain single-device step); --config.mesh.vocab=k shards the item table over
    # k of them; --config.mesh.enabled=False keeps one device even when several are visible.
    c.mesh = ml_collections.ConfigDict(dict(
        enabled=True, data=0, vocab=1, coordinator_address="", num_processes=0, process_id=0,
        lookup="auto"))

    c.workdir = ""
    return c
