"""A tiny synthetic run config shared by the training tests (seconds per epoch on a CPU)."""

from srs_jax.config.presets import synthetic_config


def tiny_config(tmp_path, **train):
    c = synthetic_config("cce")
    c.data.synthetic.n_users = 240
    c.data.synthetic.n_items = 150
    c.data.synthetic.mean_length = 12.0
    c.data.cache_dir = str(tmp_path / "cache")
    c.data.split = "leave_one_out"  # every user is a val/test user: metrics are not all zero
    c.model.hidden = 16
    c.model.max_len = 12
    c.model.dropout = 0.1
    c.train.batch_size = 32
    c.train.lr = 1e-2
    c.train.window_stride = None
    c.train.max_epochs = 2
    c.train.patience = 10
    c.train.log_every = 3
    c.train.eval_batch_size = 64
    c.eval.ks = (1, 10, 20)
    c.eval.user_chunk = 50
    c.eval.item_chunk = 64
    for key, value in train.items():
        c.train[key] = value
    return c
