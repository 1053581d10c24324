"""Every field of a run config, with the reference system's defaults (SASRec, Adam 1e-3).

Run (synthetic data, CCE): python -m experiments.train --config configs/base.py --workdir /tmp/run
Any field can be overridden: --config.train.batch_size=512 --config.loss.type=ce

The defaults and the rules every field must follow live in ``srs_jax/config/specs.py`` (one
frozen dataclass per section); ``srs_jax.config.load_specs`` checks a config once, at start-up.

* ``seed``: model init, dropout, negatives and data order all derive from it.
* ``data`` (``DataSpec``; ``srs_jax.config.dataset_config(name)`` fills a known dataset's values):
  ``name`` (dataset, in the cache folder name and messages), ``path`` (raw file, relative to the
  working directory; None for synthetic), ``format`` ('csv' | 'parquet' | 'snap_gowalla' |
  'user_item' | 'user_items' | 'synthetic'), ``separator`` (csv only; "\\t" for TSV),
  ``columns.user`` / ``.item`` / ``.time`` (raw column names), ``columns.rating`` /
  ``columns.event`` (read only by the row filters; None = not read), ``time_format`` (strptime
  format of a string time column; None = inferred), ``time_until`` (Unix seconds; later rows are
  dropped before filtering, for an older snapshot; None = keep all), ``min_rating`` (keep
  ``rating > min_rating``), ``event_value`` (keep ``event == event_value``), ``min_item_count`` /
  ``min_user_count`` (one pass each: items, then users with fewer rows are dropped), ``split``
  ('global_temporal' | 'leave_one_out'), ``time_quantile`` (global_temporal threshold),
  ``val_user_fraction`` (pre-threshold users held out for validation), ``seed`` (validation-user
  draw), ``cache_dir``, ``use_cache`` (False: neither read nor write the cache), ``source_url``
  (shown when the raw file is missing). ``synthetic`` (generator, ``srs_jax/data/synthetic.py``):
  ``n_users``, ``n_items``, ``mean_length`` / ``min_length`` / ``max_length`` / ``length_sigma``
  (log-normal lengths), ``zipf_exponent`` (popularity inside a cluster), ``n_clusters``,
  ``n_successors`` (successor items per item), ``p_follow`` (next item = a successor of the
  previous one), ``p_switch`` (change cluster), ``mean_gap_s`` (seconds between a user's
  interactions), ``time_span_s`` (range of start times), ``growth`` (0 = static world; in (0, 1]
  items are released over time and later periods have more users, so ``time_until`` gives an
  older catalog), ``seed``. Details: docs/data.md.
* ``model``: ``name`` ('sasrec' | 'bert4rec'), ``hidden``, ``num_blocks``, ``num_heads``,
  ``dropout``, ``max_len``, ``compute_dtype`` ('auto' = bfloat16 on GPU, float32 on CPU, or
  'float32' | 'bfloat16'; parameters are always float32); BERT4Rec only: ``mask_prob``,
  ``last_item_mask_prob``, ``head_transform``.
* ``loss``: ``type`` (ce, ce_neg, bce, bce_plus, gbce, sce, cce, cce_neg), ``num_negatives``,
  ``sampler`` ('uniform' | 'popularity'), ``sharing`` ('row' | 'batch' for the plain-JAX sampled
  losses, 'row' | 'block' for cce_neg), ``impl`` ('auto' | 'pallas' | 'interpret' | 'xla' |
  'naive'), ``gbce_t`` (gBCE calibration), SCE: ``sce_n_buckets``, ``sce_bucket_size_x`` /
  ``sce_bucket_size_y`` (rows / items per bucket), ``sce_mix_x`` (bucket centres mix the batch
  outputs), ``sce_item_chunk`` (catalog rows scored at a time).
* ``train``: ``batch_size``, ``lr``, ``b1``, ``b2``, ``eps``, ``max_epochs``, ``patience``
  (epochs without a strict val improvement), ``warmup_steps``, ``schedule`` ('constant' |
  'cosine'), ``grad_clip`` (0 = off), ``eval_batch_size``, ``prefetch`` (blocks of 16 batches
  queued on the device; batches on a mesh), ``log_every`` (steps between progress-bar / NaN
  checks), ``window_stride`` (None = one window per user, the reference; k = sliding windows),
  ``max_train_seconds`` (0 = no limit; else no new epoch starts after this many seconds of the
  run and the best checkpoint is evaluated),
  ``checkpoint_every_steps`` (0 = the latest checkpoint at epoch ends only; k = also every k
  steps inside an epoch, and ``--resume`` continues from that step).
* ``eval``: ``ks``, ``metrics`` (ndcg, hitrate, mrr, recall, precision, map), ``monitor`` (the
  val metric for early stopping and the best checkpoint), ``coverage_mode`` ('reference': over
  the test-period items and users, as MemoryEfficientSRS; 'conventional': over the catalog and the
  scored users; ``srs_jax/metrics/beyond.py``), ``user_chunk`` x ``item_chunk`` (largest score
  block in the top-K search), ``popularity_baseline`` (also score the most-popular baseline).
* ``mesh``: devices (``srs_jax/parallel/mesh.py``): ``enabled`` (default True: all local devices
  on ``data``; False: one device), ``data`` (0 = every device ``vocab`` does not use), ``vocab``
  (item-table shards; only cce and cce_neg), several processes ``coordinator_address`` /
  ``num_processes`` / ``process_id`` (or the ``SRS_JAX_*`` variables, or ``srun``),
  ``init_timeout_s`` (300: to reach the coordinator and the other processes),
  ``heartbeat_timeout_s`` (100: a silent process is dead) (docs/distributed.md#several-hosts).
* ``workdir``: run directory ('' = must be given with --workdir).
"""

from __future__ import annotations

import ml_collections

from srs_jax.config import run_config


def get_config(dataset: str = "synthetic") -> ml_collections.ConfigDict:
    return run_config(dataset)
