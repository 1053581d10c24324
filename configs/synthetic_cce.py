"""SASRec + CCE on the built-in synthetic data: the CPU demo and the default of experiments.train.

Run: python -m experiments.train --workdir /tmp/srs_demo
 (= python -m experiments.train --config configs/synthetic_cce.py --workdir /tmp/srs_demo)
Small model and short sequences so that it beats the popularity baseline in ~2 minutes on a CPU.
"""

from configs import base


def get_config():
    c = base.get_config("synthetic")
    c.model.hidden = 64
    c.model.max_len = 32
    c.model.dropout = 0.2
    c.loss.type = "cce"
    c.train.batch_size = 128
    c.train.max_epochs = 4
    c.train.patience = 2
    c.train.window_stride = 25
    c.workdir = "runs/synthetic_cce"
    return c
