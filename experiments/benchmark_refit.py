"""Cold start vs warm-start refit on a growing synthetic world (CPU, a few minutes).

    python -m experiments.benchmark_refit --out /tmp/refit [--users 3000 --items 1000]

1. old run: the data up to the 70% time quantile (``data.time_until``), trained to early stopping;
2. cold: the full data from a fresh initialisation;
3. refit: the full data, started from the old run (``loop.train(..., init_from=old)``: its
   parameters, items matched by raw id; fresh optimizer state).

Prints one JSON summary: epochs and seconds (train + validation, from metrics.jsonl; and wall time of the
whole call) until the refit's validation NDCG@10 reaches the cold start's best, and both test
NDCG@10.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from srs_jax.config.presets import synthetic_config
from srs_jax.data.synthetic import generate
from srs_jax.training import loop


def make_config(args, cache_dir, time_until=None):
    c = synthetic_config("cce")
    c.data.unlock()
    s = c.data.synthetic
    s.n_users, s.n_items, s.growth, s.mean_gap_s = args.users, args.items, 1.0, 3 * 3600.0
    c.data.cache_dir = cache_dir
    c.data.time_until = time_until
    c.train.max_epochs = args.max_epochs
    c.train.patience = args.patience
    c.eval.popularity_baseline = False
    return c


def read_history(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--users", type=int, default=3000)
    p.add_argument("--items", type=int, default=1000)
    p.add_argument("--max_epochs", type=int, default=40)
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--quantile", type=float, default=0.7)
    args = p.parse_args()
    cache = os.path.join(args.out, "cache")
    _, _, times = generate(make_config(args, cache).data.synthetic)
    until = float(np.quantile(times, args.quantile))
    wall = {}

    def train(name, config, init_from=None):
        """Trains ``name`` unless an earlier call of this script finished it already."""
        workdir = os.path.join(args.out, name)
        if not os.path.exists(os.path.join(workdir, "results.json")):
            t = time.perf_counter()
            loop.train(config, workdir, init_from=init_from)
            wall[name] = time.perf_counter() - t
        return workdir

    old = train("old", make_config(args, cache, until))
    cold = train("cold", make_config(args, cache))

    refit = train("refit", make_config(args, cache), init_from=old)

    h_cold, h_refit = read_history(cold), read_history(refit)
    target = max(r["val"]["ndcg@10"] for r in h_cold)
    cold_best = next(r for r in h_cold if r["val"]["ndcg@10"] == target)
    reached = next((r for r in h_refit if r["val"]["ndcg@10"] >= target), None)

    def seconds(history, epoch):
        return sum(r["epoch_seconds"] for r in history if r["epoch"] <= epoch)

    results = {name: json.load(open(os.path.join(d, "results.json")))
               for name, d in (("old", old), ("cold", cold), ("refit", refit))}
    summary = {
        "time_until": until, "quantile": args.quantile,
        "items": {k: results[k]["dataset"]["n_items"] for k in results},
        "users": {k: results[k]["dataset"]["n_users"] for k in results},
        "warm_start": {k: v for k, v in results["refit"]["warm_start"].items() if k != "init_from"},
        "cold_best_val_ndcg@10": target,
        "cold_epochs_to_best": cold_best["epoch"],
        "cold_seconds_to_best": seconds(h_cold, cold_best["epoch"]),
        "refit_epochs_to_cold_best": reached["epoch"] if reached else None,
        "refit_seconds_to_cold_best": seconds(h_refit, reached["epoch"]) if reached else None,
        "refit_best_val_ndcg@10": max(r["val"]["ndcg@10"] for r in h_refit),
        "refit_val_ndcg@10_by_epoch": [round(r["val"]["ndcg@10"], 4) for r in h_refit],
        "cold_val_ndcg@10_by_epoch": [round(r["val"]["ndcg@10"], 4) for r in h_cold],
        "test_ndcg@10": {k: results[k]["test"]["ndcg@10"] for k in results},
        "epochs_run": {k: results[k]["epochs_run"] for k in results},
        "wall_seconds_of_the_whole_train_call": wall,
    }
    print(json.dumps(summary, indent=1))
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
