"""BERT4Rec + full cross-entropy (CE) on amazon_games (leave-one-out, full ranking, history removed).

Run: DATA_DIR=../shared/data python -m experiments.train --config configs/amazon_games_bert4rec_ce.py --workdir runs/amazon_games_bert4rec_ce
"""

from srs_jax.config.presets import bert4rec_shared_config


def get_config():
    return bert4rec_shared_config("amazon_games", "ce")
