"""The files of a run directory, all written atomically (temporary name in the same folder, then
``os.replace``), so a killed run never leaves a half-written file behind."""

from __future__ import annotations

import json
import os

import ml_collections

from srs_jax.atomic_files import write_text_atomic

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "results.json"


def write_json(path: str, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def write_jsonl(path: str, rows: list[dict]) -> None:
    """Rewrites the whole log (epochs come from the checkpoint's history, so a resumed run never
    duplicates an epoch that was logged after the last checkpoint)."""
    write_text_atomic(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def save_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    write_text_atomic(os.path.join(workdir, CONFIG_FILE), config.to_json_best_effort(indent=2) + "\n")


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The resolved config a run was trained with (``<workdir>/config.json``)."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: pass the --workdir of a run made by "
                                "python -m experiments.train")
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def load_results(workdir: str) -> dict:
    path = os.path.join(workdir, RESULTS_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: the run has not finished (rerun with --resume)")
    with open(path) as f:
        return json.load(f)
