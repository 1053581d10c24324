"""The CCE- frontier: test quality against training seconds for full CCE, per-row CCE- and
shared-block CCE- with 1x, 4x and 16x the reference's negatives (``experiments/cce_neg_frontier.py``).

A point is a (data set, setting) pair trained by ``experiments.train`` with a few config
overrides. Its training seconds are ``steps x step time``: the steps come from the run's
``metrics.jsonl`` and the step time from ``srs_jax.experiments.catalog.measure_point`` on the
same config, measured alone on the device; so the runs themselves may share one GPU.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys

import ml_collections

from srs_jax.config import presets


@dataclasses.dataclass(frozen=True)
class Setting:
    """One loss setting of the frontier; ``multiple`` scales the set's reference negatives."""

    name: str
    loss: str
    sharing: str = "row"
    multiple: int = 0


@dataclasses.dataclass(frozen=True)
class DataSet:
    """A data set of the frontier: its ``cce_neg`` config file and the reference negatives."""

    config_file: str
    negatives: int
    needs_data_dir: bool


SETTINGS = (
    Setting("cce", "cce"),
    Setting("row x1", "cce_neg", "row", 1),
    Setting("block x1", "cce_neg", "block", 1),
    Setting("block x4", "cce_neg", "block", 4),
    Setting("block x16", "cce_neg", "block", 16),
)
SETS = {
    "amazon_sports": DataSet("configs/amazon_sports_cce_neg.py", 511, True),
    "amazon_games": DataSet("configs/amazon_games_cce_neg.py", 511, True),
    "synthetic_1m": DataSet("configs/synthetic_1m_cce_neg.py", 2047, False),
}
MONITOR = "ndcg@10"


def setting_named(name: str) -> Setting:
    for s in SETTINGS:
        if s.name == name:
            return s
    raise ValueError(f"unknown frontier setting {name!r}: use one of {[s.name for s in SETTINGS]}")


def num_negatives(data_set: DataSet, setting: Setting) -> int:
    """``(n + 1) * multiple - 1``: 511 -> 2047 -> 8191, so that the positive and the negatives
    keep filling whole power-of-two tiles (0 for full softmax)."""
    return (data_set.negatives + 1) * setting.multiple - 1 if setting.multiple else 0


def overrides(set_key: str, setting: Setting) -> dict:
    """Config fields (dotted) that turn the set's ``cce_neg`` config into this setting."""
    return {"loss.type": setting.loss, "loss.sharing": setting.sharing,
            "loss.num_negatives": num_negatives(SETS[set_key], setting)}


def base_config(set_key: str) -> ml_collections.ConfigDict:
    """The set's ``cce_neg`` config, as its config file builds it (``$DATA_DIR`` is read now)."""
    if set_key == "synthetic_1m":
        return presets.large_synthetic_config("cce_neg")
    return presets.shared_config(set_key, "cce_neg")


def point_config(set_key: str, setting: Setting) -> ml_collections.ConfigDict:
    c = base_config(set_key)
    for field, value in overrides(set_key, setting).items():
        section, name = field.split(".")
        c[section][name] = value
    return c


def point_name(set_key: str, setting: Setting) -> str:
    return f"{set_key}-{setting.name.replace(' ', '_')}"


def train_command(set_key: str, setting: Setting, workdir: str, budget_s: float) -> list[str]:
    """The ``experiments.train`` command line of one point (``sys.executable`` first)."""
    flags = [f"--config.{k}={v}" for k, v in overrides(set_key, setting).items()]
    return [sys.executable, "-m", "experiments.train", "--config", SETS[set_key].config_file,
            "--workdir", workdir, *flags, f"--config.train.max_train_seconds={budget_s:g}"]


def shown_command(argv: list[str]) -> str:
    """A command as the docs show it: ``python -m ...``, the workdir as ``runs/<name>``."""
    out = ["python"] + argv[1:]
    i = out.index("--workdir")
    out[i + 1] = "runs/" + os.path.basename(out[i + 1])
    prefix = "DATA_DIR=... " if any("amazon" in a for a in out) else ""
    return prefix + " ".join(out)


# ---------------------------------------------------------------------------------- results


def best_epoch(history: list[dict], monitor: str = MONITOR) -> dict | None:
    """The first epoch row with the highest validation ``monitor`` (the trainer's choice)."""
    best = None
    for row in history:
        value = row.get("val", {}).get(monitor)
        if value is not None and math.isfinite(value) and (best is None or value > best["val"][monitor]):
            best = row
    return best


def curve(row: dict) -> list[tuple]:
    """``(training seconds, validation monitor)`` per epoch of a ``frontier_row``: its
    ``val_curve`` steps x its step time (empty without a step time)."""
    if not row["step_ms"]:
        return []
    return [(steps * row["step_ms"] / 1e3, value) for steps, value in row["val_curve"]]


def frontier_row(point: dict, step_s: float | None, monitor: str = MONITOR) -> dict:
    """One table row: the point's test quality at its best epoch and the seconds to reach it."""
    history = point.get("history") or []
    results = point.get("results") or {}
    best = best_epoch(history, monitor)
    steps = best["global_step"] if best else None
    test = results.get("test", {})
    return {
        "set": point["set"], "setting": point["setting"], "num_negatives": point["num_negatives"],
        "test_" + monitor: test.get(monitor), "test_hitrate@10": test.get("hitrate@10"),
        "test_coverage@10": test.get("coverage@10"),
        "val_" + monitor: best["val"][monitor] if best else None,
        "best_epoch": best["epoch"] if best else None, "epochs": len(history),
        "steps_to_best": steps, "step_ms": step_s * 1e3 if step_s else None,
        "seconds_to_best": steps * step_s if steps is not None and step_s else None,
        "stopped": results.get("stopped", "killed" if history else "no epoch"),
        "command": point["command"],
        "val_curve": [(row["global_step"], row["val"][monitor]) for row in history
                      if row.get("val", {}).get(monitor) is not None],
    }


def rows_for(runs: dict, timing: dict, monitor: str = MONITOR) -> list[dict]:
    """Rows of every point of ``runs`` (the runs stage's JSON) with ``timing`` (the timing
    stage's JSON: point name -> ``{"median_step_s": ...}``), in ``SETS`` x ``SETTINGS`` order."""
    order = {(k, s.name): i for i, (k, s) in enumerate((k, s) for k in SETS for s in SETTINGS)}
    rows = [frontier_row(p, (timing.get(p["name"]) or {}).get("median_step_s"), monitor)
            for p in runs["points"]]
    return sorted(rows, key=lambda r: order.get((r["set"], r["setting"]), len(order)))


def relative(rows: list[dict], monitor: str = MONITOR, baseline: str = "row x1") -> list[dict]:
    """Adds, for each row of a set that has the ``baseline`` setting: ``vs_row`` (test
    ``monitor`` / the baseline's), ``seconds_to_row_quality`` (training seconds of the first epoch
    whose validation ``monitor`` reaches the baseline's best; None if none does) and ``speedup``
    (the baseline's seconds to its best / this row's seconds to that quality)."""
    key = "test_" + monitor
    base = {r["set"]: r for r in rows if r["setting"] == baseline}
    for r in rows:
        b = base.get(r["set"])
        r["vs_row"] = r[key] / b[key] if b and b[key] and r[key] is not None else None
        target = (b or {}).get("val_" + monitor)
        reached = [seconds for seconds, value in curve(r) if target is not None and value >= target]
        r["seconds_to_row_quality"] = reached[0] if reached else None
        r["speedup"] = (b["seconds_to_best"] / r["seconds_to_row_quality"]
                        if b and b["seconds_to_best"] and r["seconds_to_row_quality"] else None)
    return rows
