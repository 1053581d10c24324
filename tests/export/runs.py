"""Tiny real runs for the export and warm-start tests (seconds on a CPU)."""

from __future__ import annotations

from configs import synthetic_bert4rec_cce, synthetic_cce
from srs_jax.training import loop


def tiny_config(tmp_path, model: str = "sasrec", *, seed: int = 42, n_items: int = 90,
                hidden: int = 16, epochs: int = 1, **synthetic):
    """SASRec or BERT4Rec on a small synthetic catalog; ``synthetic`` overrides generator keys."""
    c = (synthetic_cce if model == "sasrec" else synthetic_bert4rec_cce).get_config()
    c.seed = seed
    c.data.unlock()
    s = c.data.synthetic
    s.n_users, s.n_items, s.mean_length, s.max_length = 160, n_items, 10.0, 40
    for key, value in synthetic.items():
        s[key] = value
    c.data.cache_dir = str(tmp_path / "cache")
    c.data.split = "leave_one_out"
    c.data.min_item_count = 1
    c.model.hidden = hidden
    c.model.num_blocks = 1
    c.model.max_len = 8
    c.model.compute_dtype = "float32"
    c.train.batch_size = 64
    c.train.lr = 1e-2
    c.train.window_stride = None
    c.train.max_epochs = epochs
    c.train.log_every = 2
    c.train.eval_batch_size = 32
    c.eval.ks = (1, 10)
    c.eval.user_chunk = 64
    c.eval.item_chunk = 32
    c.eval.popularity_baseline = False
    return c


def train_run(config, workdir) -> str:
    loop.train(config, str(workdir))
    return str(workdir)
