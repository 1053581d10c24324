"""Data pipeline: raw files -> filtered, split, encoded, cached sequences -> int32 batches.

See docs/data.md (datasets, split protocols, cache) and docs/architecture.md (contracts).
"""

from srs_jax.data.batches import BatchIterator, last_items, training_windows
from srs_jax.data.config import DATASETS, dataset_config
from srs_jax.data.dataset import EvalSplit, PreparedDataset, Sequences, prepare_dataset

__all__ = [
    "BatchIterator",
    "DATASETS",
    "EvalSplit",
    "PreparedDataset",
    "Sequences",
    "dataset_config",
    "last_items",
    "prepare_dataset",
    "training_windows",
]
