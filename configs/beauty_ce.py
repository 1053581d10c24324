"""SASRec + full cross-entropy (CE) on beauty, the reference's batch / length / negatives.

Run: python -m experiments.train --config configs/beauty_ce.py --workdir runs/beauty_ce
"""

from configs.benchmarks import benchmark_config


def get_config():
    return benchmark_config("beauty", "ce")
