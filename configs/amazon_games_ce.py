"""SASRec + full cross-entropy (CE) on amazon_games (leave-one-out, full ranking, history removed).

Run: DATA_DIR=../shared/data python -m experiments.train --config configs/amazon_games_ce.py --workdir runs/amazon_games_ce
"""

from srs_jax.config.presets import shared_config


def get_config():
    return shared_config("amazon_games", "ce")
