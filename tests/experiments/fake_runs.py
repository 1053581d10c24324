"""Stand-ins for the trainer in experiment tests: run folders in the trainer's format (the keys of
``srs_jax.training.loop.train``'s results.json, config.json and metrics.jsonl), written fast."""

from __future__ import annotations

import json
import os

import numpy as np

KS = (1, 5, 10, 20, 100)


def metric_block(rng: np.random.Generator, *, beyond: bool) -> dict:
    out = {}
    for k in KS:
        for name in ("ndcg", "hitrate", "mrr", "recall", "precision", "map"):
            out[f"{name}@{k}"] = float(rng.uniform(0, 0.3))
        if beyond:
            out[f"coverage@{k}"] = float(rng.uniform(0, 1))
            out[f"surprisal@{k}"] = float(rng.uniform(0, 1))
    return out


def fake_results(rng, *, dataset="synthetic", n_items=1000, peak_bytes=None, workdir="",
                 epochs=3) -> dict:
    """A results.json dict with random values (``peak_bytes=None`` = CPU, no memory statistics)."""
    steps_per_s = float(rng.uniform(5, 50))
    res = {
        "backend": "cpu" if peak_bytes is None else "gpu", "best_checkpoint_epoch": 2,
        "best_epoch": 2, "compile_s": float(rng.uniform(1, 30)),
        "dataset": {"n_items": n_items, "n_test_users": 50, "n_users": 500, "n_val_users": 20,
                    "name": dataset},
        "device": "cpu" if peak_bytes is None else "NVIDIA H100 80GB HBM3",
        "epoch_time_s": float(rng.uniform(1, 100)), "epoch_train_time_s": float(rng.uniform(1, 90)),
        "epochs_run": epochs, "peak_memory_bytes": peak_bytes,
        "peak_memory_train_bytes": None if peak_bytes is None else int(peak_bytes * 0.8),
        "popularity": {"test": metric_block(rng, beyond=True), "val": metric_block(rng, beyond=False)},
        "steps_per_s": steps_per_s, "tokens_per_s": steps_per_s * 1000.0, "stopped": "max_epochs",
        "test": metric_block(rng, beyond=True), "train_steps": 30, "train_tokens": 30000,
        "val": metric_block(rng, beyond=False), "workdir": workdir,
    }
    if peak_bytes is None:
        res["memory_note"] = "the backend reports no memory statistics (e.g. CPU): peak memory is null"
    return res


def write_run(workdir: str, config, results: dict, epochs: int = 3) -> dict:
    """Writes config.json, metrics.jsonl and results.json as the trainer does."""
    os.makedirs(workdir, exist_ok=True)
    results = dict(results, workdir=os.path.abspath(workdir))
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2))
    rows = [{"epoch": e + 1, "train_loss": 5.0 - e, "val": {"ndcg@10": 0.01 * (e + 1)},
             "epoch_seconds": 1.0, "train_seconds": 0.5, "peak_memory_bytes": results["peak_memory_bytes"]}
            for e in range(epochs)]
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(results, f)
    return results


def catalog_json(path, *, peak=True):
    """A catalog-scale JSON: CE runs out of memory at 1e6 items, the others fit (made-up sizes)."""
    points = []
    for loss, fail_at in (("ce", 10**6), ("ce_neg", None), ("cce", None), ("cce_neg", None)):
        for v in (10**4, 10**5, 10**6, 10**7):
            if fail_at and v >= fail_at:
                status = "oom" if v == fail_at else "skipped"
                points.append({"loss": loss, "n_items": v, "status": status, "error": "x"})
            else:
                b = v * 256 * 16 * (4 if loss == "ce" else 1)
                points.append({"loss": loss, "n_items": v, "status": "ok", "error": "",
                               "peak_memory_bytes": b if peak else None,
                               "compiled_memory_bytes": b, "median_step_s": v * 1e-8 + 0.01,
                               "tokens_per_s": 131072 / (v * 1e-8 + 0.01)})
    with open(path, "w") as f:
        json.dump({"meta": {"device": "fake", "batch_size": 1024}, "points": points}, f)
