"""CCE- frontier: quality against training seconds for full CCE, per-row CCE- and shared blocks.

    DATA_DIR=../shared/data python -m experiments.cce_neg_frontier --stage runs --out OUT [--budget_s 330]
    DATA_DIR=../shared/data python -m experiments.cce_neg_frontier --stage timing --out OUT
    python -m experiments.cce_neg_frontier --stage report --out OUT [--runs J --timing J]

Points: SASRec on amazon_sports, amazon_games (``$DATA_DIR``) and synthetic_1m (about 10^6
items) x {cce, row x1, block x1, block x4, block x16} (``srs_jax.experiments.frontier``; x1 is
the reference's negative count: 511 on the Amazon sets, 2047 on synthetic_1m).

* ``runs``: trains every point at once (``--sets`` / ``--settings`` choose), each an
  ``experiments.train`` process in OUT/runs/<point> with a wall-clock budget of ``--budget_s``;
  stops any still running after ``--deadline_s``; writes OUT/frontier_runs.json (each point's
  command, exit status, results and per-epoch history). Runs sharing one GPU slow each other,
  which changes their seconds but not their epochs.
* ``timing``: the step time of every point's config, measured alone (median of ``--steps``
  after a compile and ``--warmup`` steps, random ids): OUT/frontier_timing.json.
* ``report``: the table (test NDCG@10 of the best validation epoch, and the training seconds to
  reach it = its steps x the measured step time) and the plot (validation NDCG@10 against
  training seconds): OUT/frontier.md, OUT/frontier.png, OUT/frontier.json.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import time

from absl import flags

from srs_jax.training import cli as _cli

_STAGE = flags.DEFINE_enum("stage", None, ["runs", "timing", "report"], "What to do.")
_OUT = flags.DEFINE_string("out", None, "Output folder.")
_SETS = flags.DEFINE_list("sets", None, "Data sets (default: all).")
_SETTINGS = flags.DEFINE_list("settings", None, "Settings by name, e.g. 'row x1,block x4' "
                              "(default: all).")
_BUDGET = flags.DEFINE_float("budget_s", 330.0, "runs: each run's train.max_train_seconds.")
_DEADLINE = flags.DEFINE_float("deadline_s", 540.0, "runs: stop runs still going after this.")
_STEPS = flags.DEFINE_integer("steps", 20, "timing: timed steps per point.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "timing: untimed steps after the compile.")
_RUNS = flags.DEFINE_string("runs", None, "report: the runs JSON (default OUT/frontier_runs.json).")
_TIMING = flags.DEFINE_string("timing", None, "report: the timing JSON (default "
                              "OUT/frontier_timing.json).")


def _points():
    from srs_jax.experiments import frontier

    sets = _SETS.value or list(frontier.SETS)
    for key in sets:
        if key not in frontier.SETS:
            raise _cli.UsageError(f"--sets: unknown set {key!r}: use some of {list(frontier.SETS)}")
    settings = [frontier.setting_named(n.strip()) for n in (_SETTINGS.value or
                                                            [s.name for s in frontier.SETTINGS])]
    if any(frontier.SETS[k].needs_data_dir for k in sets) and not os.environ.get("DATA_DIR"):
        raise _cli.UsageError("the Amazon sets need DATA_DIR=<folder with the two Amazon files>, "
                              "or pass --sets=synthetic_1m")
    return [(k, s) for k in sets for s in settings]


def _environment() -> dict:
    import jax

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=False).stdout.strip()
    except OSError:
        commit = ""
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "jax": jax.__version__, "devices": [str(d) for d in jax.devices()],
            "device_kind": jax.devices()[0].device_kind, "commit": commit}


def _write(path: str, obj) -> None:
    from srs_jax.atomic_files import write_json_atomic

    write_json_atomic(path, obj, indent=1)
    print(f"[frontier] wrote {path}")


def _read(path: str, stage: str) -> dict:
    if not os.path.isfile(path):
        raise _cli.UsageError(f"{path} not found: run --stage {stage} first (its --out), or "
                              f"pass --{stage}=<its JSON>")
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError as e:
        raise _cli.UsageError(f"{path} is not valid JSON ({e}): run --stage {stage} again") from None


def _stage_runs(out: str) -> None:
    from srs_jax import data as data_lib
    from srs_jax.config import load_specs
    from srs_jax.experiments import frontier
    from srs_jax.training import run_files

    points = _points()
    for key in dict.fromkeys(k for k, _ in points):  # fills the cache once, before the runs race
        data_lib.prepare_dataset(load_specs(frontier.base_config(key)).data)
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false", PYTHONUNBUFFERED="1")
    os.makedirs(os.path.join(out, "logs"), exist_ok=True)
    procs, started = [], time.time()
    for key, setting in points:
        name = frontier.point_name(key, setting)
        argv = frontier.train_command(key, setting, os.path.join(out, "runs", name), _BUDGET.value)
        with open(os.path.join(out, "logs", name + ".log"), "w") as log:  # the child keeps its copy
            procs.append((key, setting, name, argv, subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=env)))
        print(f"[frontier] started {name}: {frontier.shown_command(argv)}")
    while any(p.poll() is None for *_, p in procs) and time.time() - started < _DEADLINE.value:
        time.sleep(2)
    for *_, p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for *_, p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    records = []
    for key, setting, name, argv, p in procs:
        workdir = argv[argv.index("--workdir") + 1]
        results_path = os.path.join(workdir, run_files.RESULTS_FILE)
        metrics_path = os.path.join(workdir, run_files.METRICS_FILE)
        with open(os.path.join(out, "logs", name + ".log"), errors="replace") as f:
            log_tail = f.read()[-1500:]
        records.append({
            "name": name, "set": key, "setting": setting.name,
            "num_negatives": frontier.num_negatives(frontier.SETS[key], setting),
            "command": frontier.shown_command(argv), "exit": p.returncode,
            "results": run_files.read_json(results_path) if os.path.isfile(results_path) else None,
            "history": (run_files.read_jsonl(metrics_path) if os.path.isfile(metrics_path) else []),
            "log_tail": log_tail})
        print(f"[frontier] {name}: exit {p.returncode}, {len(records[-1]['history'])} epochs")
    _write(os.path.join(out, "frontier_runs.json"),
           {"environment": _environment(), "budget_s": _BUDGET.value,
            "wall_s": time.time() - started, "points": records})


def _stage_timing(out: str) -> None:
    import jax

    from srs_jax import data as data_lib
    from srs_jax.config import load_specs
    from srs_jax.experiments import catalog, frontier

    points, timing, n_items = _points(), {}, {}
    for key, setting in points:
        name = frontier.point_name(key, setting)
        config = frontier.point_config(key, setting)
        if key not in n_items:
            n_items[key] = int(data_lib.prepare_dataset(load_specs(config).data).n_items)
        try:
            timing[name] = catalog.measure_point(config, n_items[key], steps=_STEPS.value,
                                                 warmup=_WARMUP.value)
        except Exception as e:  # noqa: BLE001 - recorded, the other points still run
            timing[name] = {"status": "error", "error": f"{type(e).__name__}: {e}"[:500]}
        timing[name].update(n_items=n_items[key], step_times_s=None)
        print(f"[frontier] {name}: {timing[name].get('median_step_s')} s/step")
        jax.clear_caches()
    _write(os.path.join(out, "frontier_timing.json"),
           {"environment": _environment(), "steps": _STEPS.value, "warmup": _WARMUP.value,
            "points": timing})


def _stage_report(out: str) -> None:
    from srs_jax.atomic_files import write_text_atomic
    from srs_jax.experiments import frontier, plots, tables

    runs = _read(_RUNS.value or os.path.join(out, "frontier_runs.json"), "runs")
    timing = _read(_TIMING.value or os.path.join(out, "frontier_timing.json"), "timing")
    rows = frontier.relative(frontier.rows_for(runs, timing["points"]))
    columns = (tables.Column("set", "Data", ""), tables.Column("setting", "Setting", ""),
               tables.Column("num_negatives", "Negatives", "d"),
               tables.Column("test_ndcg@10", "Test NDCG@10", ".4f"),
               tables.Column("vs_row", "vs row x1", ".3f"),
               tables.Column("test_hitrate@10", "HR@10", ".4f"),
               tables.Column("best_epoch", "Best epoch", "d"), tables.Column("epochs", "Epochs", "d"),
               tables.Column("step_ms", "Step, ms", ".2f"),
               tables.Column("seconds_to_best", "Train s to best", ".1f"),
               tables.Column("seconds_to_row_quality", "Train s to row x1's best", ".1f"),
               tables.Column("speedup", "Speed-up vs row x1", ".2f"),
               tables.Column("stopped", "Stopped by", ""))
    table = tables.to_markdown(rows, columns)
    os.makedirs(out, exist_ok=True)
    write_text_atomic(os.path.join(out, "frontier.md"), table)
    plot = plots.frontier(rows, os.path.join(out, "frontier.png"))
    _write(os.path.join(out, "frontier.json"), {"rows": rows, "runs_environment": runs["environment"],
                                                "timing_environment": timing["environment"]})
    print(table)
    print(f"[frontier] wrote {os.path.join(out, 'frontier.md')}" + (f", {plot}" if plot else ""))


def main(argv):
    if len(argv) > 1:
        raise _cli.UsageError(f"unexpected arguments {argv[1:]}: see --help")
    if not _STAGE.value or not _OUT.value:
        raise _cli.UsageError("pass --stage runs|timing|report and --out FOLDER")
    out = os.path.abspath(_OUT.value)
    {"runs": _stage_runs, "timing": _stage_timing, "report": _stage_report}[_STAGE.value](out)


if __name__ == "__main__":
    _cli.run_main(main, doc=__doc__)
