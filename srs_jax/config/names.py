"""Every choice a run config can name, defined once (validated in ``srs_jax.config.specs``)."""

from __future__ import annotations

MODEL_NAMES = ("sasrec", "bert4rec")
COMPUTE_DTYPES = ("auto", "float32", "bfloat16")  # 'auto' is resolved by load_specs

# Losses (definitions in srs_jax.losses).
LOSS_TYPES = ("ce", "ce_neg", "bce", "bce_plus", "gbce", "sce", "cce", "cce_neg")
SAMPLED_LOSSES = ("ce_neg", "cce_neg", "bce_plus", "gbce")  # need loss.num_negatives >= 1
KERNEL_LOSSES = ("cce", "cce_neg")  # through pallas_kernels; the only ones with vocab > 1
SAMPLERS = ("uniform", "popularity")
SHARINGS = ("row", "batch", "block")  # 'block': cce_neg only; 'batch': plain-JAX losses only
KERNEL_SHARINGS = ("row", "block")
PLAIN_SHARINGS = ("row", "batch")
IMPLS = ("auto", "pallas", "interpret", "xla", "naive")  # 'naive': cce only (plain autodiff)

SCHEDULES = ("constant", "cosine")
METRICS = ("ndcg", "hitrate", "mrr", "recall", "precision", "map")
COVERAGE_MODES = ("reference", "conventional")

DATASETS = ("movielens_20m", "beauty", "zvuk", "megamarket", "30music", "gowalla", "gowalla_snap",
            "synthetic", "amazon_sports", "amazon_video_games", "generic")
SPLITS = ("global_temporal", "leave_one_out")
FORMATS = ("csv", "parquet", "snap_gowalla", "user_item", "user_items", "synthetic")
