"""Result tables and plots from finished runs, grid CSVs and catalog-scale JSONs.

    python -m experiments.report runs/zvuk_cce runs/zvuk_ce runs/grid_zvuk/grid.csv \\
        results/catalog_scale.json --out reports/zvuk [--noplots]

Folders are run folders (results.json inside) or folders of runs (e.g. a grid's ``--out``).
Writes runs.md/.csv (Dataset, Loss, BS, SL, NN, NDCG@10, Coverage@10, Surprisal@10, peak memory
GB, epoch s, step ms), catalog.md/.csv, PNG plots (memory and step time against catalog size, one
line per loss, batch size and length; quality against memory; training curves, which one run
fills) and report.md into --out, and prints the tables. Errors print one line (--debug: traceback).
"""

from __future__ import annotations

from absl import flags

from srs_jax.training import cli as _cli

_OUT = flags.DEFINE_string("out", "report", "Output folder.")
_PLOTS = flags.DEFINE_bool("plots", True, "Write PNG plots (needs matplotlib).")


def main(argv):
    from srs_jax.experiments import reporting

    if len(argv) < 2:
        raise _cli.UsageError("nothing to report: pass run folders, grid CSVs or catalog-scale "
                              "JSONs, e.g. python -m experiments.report runs/demo --out report")
    inputs = reporting.collect(argv[1:])
    written = reporting.write_report(inputs, _OUT.value, plots=_PLOTS.value)
    with open(written["report.md"]) as f:
        print(f.read())
    print(f"[report] wrote {', '.join(sorted(written))} to {_OUT.value}")


if __name__ == "__main__":
    _cli.run_main(main, doc=__doc__)
