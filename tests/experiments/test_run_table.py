"""experiments.run_table: the summary the GPU session scripts print from finished run folders."""

from __future__ import annotations

import json

from experiments import run_table


def _result(ndcg, peak, pop):
    r = {"test": {"ndcg@10": ndcg, "hitrate@10": 2 * ndcg, "coverage@10": 0.5},
         "epochs_run": 7, "best_epoch": 4, "stopped": "early stopping", "epoch_time_s": 1.234,
         "peak_memory_bytes": peak}
    if pop is not None:
        r["popularity"] = {"test": {"ndcg@10": pop}}
    return r


def test_table_lists_finished_runs_in_order(tmp_path):
    for name, res in (("b_run", _result(0.031234, 3 * 2**30, 0.00521)),
                      ("a_run", _result(0.0619, None, None))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(res))
    (tmp_path / "logs").mkdir()  # no results.json: not a run
    (tmp_path / "c_unfinished").mkdir()

    lines = run_table.table(str(tmp_path), popularity=True).splitlines()
    assert len(lines) == 4 and lines[0].count("|") == lines[1].count("|") == lines[2].count("|")
    assert lines[2] == "| a_run | 0.0619 | 0.1238 | 0.5000 | None | 7 (4) | early stopping | 1.23 | None |"
    assert lines[3] == "| b_run | 0.0312 | 0.0625 | 0.5000 | 0.0052 | 7 (4) | early stopping | 1.23 | 3.0 |"
    plain = run_table.table(str(tmp_path)).splitlines()
    assert "pop." not in plain[0] and plain[3].count("|") == lines[3].count("|") - 1
