"""Trains a model.

    python -m experiments.train --config configs/synthetic_cce.py --workdir runs/demo \\
        [--config.train.max_epochs=2 ...] [--resume | --init_from runs/older] [--debug]

Without ``--config`` it trains the synthetic CPU demo (configs/synthetic_cce.py). The run folder
(--workdir, default config.workdir) is locked while the run writes it; ``--resume`` continues from
its latest checkpoint and refuses a config that changes what the checkpoint means
(docs/run_folders.md lists the fields that may change). Errors print one line starting
``error:``; ``--debug`` (or SRS_JAX_DEBUG=1) shows the traceback.

Several processes (hosts): start the same command in each, with ``config.mesh`` or the
``SRS_JAX_COORDINATOR_ADDRESS`` / ``SRS_JAX_NUM_PROCESSES`` / ``SRS_JAX_PROCESS_ID`` variables, or
under ``srun`` / ``mpirun`` (docs/distributed.md); process 0 writes the run folder.
"""

from __future__ import annotations

import os
import sys

from absl import flags

from srs_jax.config import load_specs, resolve_launch
from srs_jax.training import cli as _cli
from srs_jax.training import run_files
from srs_jax.training import runtime_guard
from srs_jax.training import workdir as workdir_lib

_CONFIG = _cli.define_config_file(
    "config", os.path.join(os.path.dirname(__file__), "..", "configs", "synthetic_cce.py"),
    "Config file (configs/*.py[:arg]); override fields with --config.<field>=<value>.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder (default: config.workdir).")
_RESUME = flags.DEFINE_bool("resume", False, "Continue the run in --workdir from its latest checkpoint.")
_INIT_FROM = flags.DEFINE_string(
    "init_from", None, "Start a new run from the best parameters of this earlier run folder "
    "(items matched by raw id, new items freshly initialised, fresh optimizer state).")

def _interrupted() -> str:
    """The Ctrl-C hint, from the folder itself: what ``--resume`` continues from, if anything."""
    workdir = _WORKDIR.value or _CONFIG.value.get("workdir") or ""
    path = os.path.abspath(workdir) if workdir else ""
    if not path or not os.path.isfile(os.path.join(path, run_files.CONFIG_FILE)):
        return "nothing was written"
    return workdir_lib.resume_hint(path)


def _restart_hint() -> str:
    """How to continue after the distributed runtime ended the run."""
    hint = _interrupted()
    if hint == "nothing was written":
        return "start every process again"
    return f"{hint} (in every process)"


def main(argv):
    if len(argv) > 1:
        raise _cli.UsageError(f"unexpected arguments {argv[1:]}: use --config, --workdir, --resume")
    config = _CONFIG.value
    workdir = _WORKDIR.value or config.get("workdir") or ""
    init_from = _INIT_FROM.value
    if init_from and _RESUME.value:
        raise _cli.UsageError("--init_from starts a new run and --resume continues one: pass only one")
    if init_from and workdir_lib.init_from_problem(init_from):
        raise _cli.UsageError(workdir_lib.init_from_problem(init_from))
    launch = resolve_launch(load_specs(config, resolve_auto=False).mesh, os.environ)
    if launch.several and not _cli.debug_enabled():
        # The distributed runtime may abort this process from C++: one line instead.
        runtime_guard.install(_restart_hint)
    with workdir_lib.open_run(workdir, config, _RESUME.value, primary=launch.primary) as run:
        if run.changes and launch.primary:
            print(f"[srs_jax] --resume with changed settings (recorded in resumes.jsonl): "
                  f"{workdir_lib.format_changes(run.changes)}", file=sys.stderr, flush=True)
        # JAX loads only after the cheap checks.
        from srs_jax.training.loop import ProcessLostError, train

        try:
            train(config, run.path, resume=_RESUME.value, init_from=init_from)
        except FloatingPointError as e:
            raise FloatingPointError(_nonfinite_message(str(e), run.path)) from e
        except ProcessLostError as e:
            raise ProcessLostError(f"{e}; {_restart_hint()}") from e
        if launch.primary:
            run.record_in_results()


def _nonfinite_message(text: str, workdir: str) -> str:
    """The loop's non-finite-loss message, with the checkpoint part true to the folder."""
    head = text.split("; the last good checkpoint")[0].split(": stopped")[0]
    ck = workdir_lib.latest_checkpoint(workdir)
    if ck is None:
        return (f"{head}: stopped before any checkpoint was written; lower config.train.lr or set "
                "config.train.grad_clip and train again")
    return (f"{head}: stopped; {workdir_lib.resume_hint(workdir)} after lowering config.train.lr "
            "or setting config.train.grad_clip")


if __name__ == "__main__":
    _cli.run_main(main, doc=__doc__, on_interrupt=_interrupted)
