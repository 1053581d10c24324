"""Re-evaluates a saved run with its best (or latest) checkpoint:

    python -m experiments.evaluate --workdir runs/demo [--which best|latest] [--ks=1,10]
        [--coverage_mode conventional]

Writes ``<workdir>/eval_<which>.json`` and prints it. ``--ks`` replaces the run's eval.ks (e.g.
``--ks=1,10``). The checkpoint's checksums are verified first; a folder a training is writing is
refused. Errors print one line (--debug: traceback).
"""

from __future__ import annotations

import dataclasses
import json
import os

from absl import flags

from srs_jax.training import cli as _cli
from srs_jax.training import workdir as workdir_lib

_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder written by experiments.train.")
_WHICH = flags.DEFINE_enum("which", "best", ["best", "latest"], "Checkpoint to evaluate.")
_KS = flags.DEFINE_list("ks", None, "Cutoffs K replacing the run's eval.ks, e.g. --ks=1,10.")
_COVERAGE = flags.DEFINE_enum("coverage_mode", None, ["reference", "conventional"],
                              "Override eval.coverage_mode of the saved config.")


def _ks(values: list[str]) -> tuple[int, ...]:
    try:
        ks = tuple(int(v) for v in values)
    except ValueError:
        ks = ()
    if not ks or min(ks) < 1:
        raise _cli.UsageError(f"--ks={','.join(values)}: give positive integers, e.g. --ks=1,10")
    return ks


def main(argv):
    if len(argv) > 1:
        raise _cli.UsageError(f"unexpected arguments {argv[1:]}: use --workdir, --which, --ks")
    if not _WORKDIR.value:
        raise _cli.UsageError("--workdir is required: the folder of a run made by experiments.train")
    ks = _ks(_KS.value) if _KS.value else None
    workdir = os.path.abspath(_WORKDIR.value)
    from srs_jax.training import run_files

    run_files.load_config_dict(workdir)  # a missing or corrupted config.json: one line, first
    with workdir_lib.RunLock(workdir, shared=True):
        if not workdir_lib.checkpoint_step_dirs(workdir, _WHICH.value):
            raise FileNotFoundError(f"{workdir} holds no {_WHICH.value} checkpoint yet: train it "
                                    "first (python -m experiments.train ... --resume)")
        workdir_lib.verify_checkpoints(workdir)
        from srs_jax.training import evaluation, steps
        from srs_jax.training.saved_run import load_run

        run = load_run(workdir, which=_WHICH.value)
        changes = {}
        if _COVERAGE.value:
            changes["coverage_mode"] = _COVERAGE.value
        if ks is not None:
            # The monitored metric plays no part here; it only has to name one of the new cutoffs.
            metric, _, k = run.config.eval.monitor.partition("@")
            changes.update(ks=ks, monitor=run.config.eval.monitor if int(k) in ks else f"{metric}@{ks[0]}")
        if changes:
            run = dataclasses.replace(
                run, config=dataclasses.replace(run.config, eval=dataclasses.replace(run.config.eval, **changes)))
        encode_fn = steps.make_encode_step(run.config.model)
        kw = dict(config=run.config, n_items=run.dataset.n_items, encode_fn=encode_fn)
        val, _ = evaluation.evaluate_model(run.graphdef, run.state, run.dataset.val, **kw)
        test, _ = evaluation.evaluate_model(run.graphdef, run.state, run.dataset.test,
                                            test_period=run.dataset.test_period, **kw)
        out = {"val": val, "test": test, "checkpoint": _WHICH.value, "epoch": run.checkpoint_epoch}
        run_files.write_json(os.path.join(run.workdir, f"eval_{_WHICH.value}.json"), out)
    print(json.dumps(out, indent=2, sort_keys=True))


if __name__ == "__main__":
    _cli.run_main(main, doc=__doc__)
