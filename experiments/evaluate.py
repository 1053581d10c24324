"""Re-evaluates a saved run with its best checkpoint: ``python -m experiments.evaluate --workdir W
[--which best|latest] [--config.eval.ks=1,10] ...``. Writes ``<W>/eval_<which>.json`` and prints it."""

from __future__ import annotations

import json
import os

from absl import flags

from srs_jax.training import cli as _cli

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory written by experiments.train.")
_WHICH = flags.DEFINE_enum("which", "best", ["best", "latest"], "Checkpoint to evaluate.")
_COVERAGE = flags.DEFINE_enum("coverage_mode", None, ["reference", "conventional"],
                              "Override eval.coverage_mode of the saved config.")


def main(argv):
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments {argv[1:]}: use --workdir, --which")
    if not _WORKDIR.value:
        raise ValueError("--workdir is required: the directory of a run made by experiments.train")
    from srs_jax.training import evaluation, run_files, steps
    from srs_jax.training.saved_run import load_run

    run = load_run(_WORKDIR.value, which=_WHICH.value)
    if _COVERAGE.value:
        run.config.eval.coverage_mode = _COVERAGE.value
    encode_fn = steps.make_encode_step(run.config.model)
    kw = dict(config=run.config, n_items=run.dataset.n_items, encode_fn=encode_fn)
    val, _ = evaluation.evaluate_model(run.graphdef, run.state, run.dataset.val, **kw)
    test, _ = evaluation.evaluate_model(run.graphdef, run.state, run.dataset.test,
                                        test_period=run.dataset.test_period, **kw)
    out = {"val": val, "test": test, "checkpoint": _WHICH.value, "epoch": run.checkpoint_epoch}
    run_files.write_json(os.path.join(run.workdir, f"eval_{_WHICH.value}.json"), out)
    print(json.dumps(out, indent=2, sort_keys=True))


if __name__ == "__main__":
    _cli.run_main(main)
