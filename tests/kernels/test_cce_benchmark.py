"""Smoke tests of ``python -m experiments.benchmark_loss`` and ``experiments.benchmark_sampled``
on CPU (Pallas interpreter, tiny shapes)."""

from __future__ import annotations

import json

import pytest

from experiments import benchmark_loss, benchmark_sampled


def test_benchmark_writes_rows_for_every_case_and_shape(tmp_path, capsys):
    out = tmp_path / "res" / "cce.json"
    benchmark_loss.main(["--n", "40", "--v", "70", "--d", "16", "--v-sweep", "33", "--sweep-d", "16",
                         "--reps", "1", "--interpret", "--out", str(out)])
    payload = json.loads(out.read_text())
    assert [p.name for p in out.parent.iterdir()] == ["cce.json"]  # no temporary left behind
    rows = payload["rows"]
    assert {(r["case"], r["v"]) for r in rows} == {
        (c, v) for c in ("cce_pallas", "chunked_xla", "naive_xla") for v in (70, 33)}
    for r in rows:
        assert "error" not in r, r
        assert r["fwd_ms"] > 0 and r["fwd_bwd_ms"] > 0
        # The bound uses the rates written in meta.
        fwd_bound, total = benchmark_loss.bounds_ms(
            r["n"], r["v"], r["d"], payload["meta"]["bf16_matmul_flops"], payload["meta"]["exp2_per_s"])
        assert r["fwd_bound_ms"] == pytest.approx(fwd_bound)
        assert r["fwd_bwd_frac_of_bound"] == pytest.approx(total / r["fwd_bwd_ms"])
    assert "cce_pallas" in capsys.readouterr().out


def test_unknown_case_is_rejected():
    with pytest.raises(SystemExit, match="unknown cases"):
        benchmark_loss.main(["--cases", "liger"])


def test_variants_time_each_named_config(tmp_path):
    out = tmp_path / "variants.json"
    benchmark_loss.main(["--n", "24", "--v", "50", "--d", "16", "--reps", "1", "--interpret",
                         "--variants", '{"base": {}, "narrow": {"fwd_block_v": 16, "block_n": 16}}',
                         "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [r["case"] for r in rows] == ["cce_base", "cce_narrow"]
    assert all("error" not in r and r["fwd_bwd_ms"] > 0 for r in rows)
    # The written config is the one timed: defaults plus the variant's fields.
    assert rows[1]["config"]["fwd_block_v"] == 16 and rows[0]["config"]["fwd_block_v"] != 16
    assert rows[1]["config"]["block_n"] == rows[1]["config"]["fwd_block_n"] == 16


def test_variants_with_unknown_config_field_fail_clearly():
    with pytest.raises(SystemExit, match="unknown CCEConfig fields \\['fwd_poly_v'\\]"):
        benchmark_loss.main(["--d", "16", "--interpret", "--variants", '{"x": {"fwd_poly_v": 64}}'])


def test_tune_times_each_tile(tmp_path):
    out = tmp_path / "tune.json"
    benchmark_loss.main(["--n", "24", "--v", "50", "--d", "16", "--reps", "1", "--interpret",
                         "--tune", "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert {r["case"] for r in rows} == {"tune_fwd", "tune_bwd"}
    assert all("error" not in r and r["fwd_bwd_ms"] > 0 for r in rows)


@pytest.mark.parametrize("sampler", ["uniform", "popularity"])
def test_sampled_benchmark_rows_for_each_sharing(tmp_path, capsys, sampler):
    out = tmp_path / "sampled.json"
    benchmark_sampled.main(["--n-rows", "48", "--num-items", "300", "--num-negatives", "7",
                            "--d", "16", "--sharing", "row", "block", "--block-rows", "16",
                            "--impl", "interpret", "--sampler", sampler, "--reps", "1",
                            "--copy-gib", "0.001", "--masked-frac", "0.25", "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [r["sharing"] for r in rows] == ["row", "block"]
    for r in rows:
        assert "error" not in r, r
        assert r["fwd_ms"] > 0 and r["fwd_bwd_ms"] > 0 and r["gather_bound_ms"] > 0
        assert (r["row_block"], r["neg_block"], r["num_warps"]) == (16, 32, 4)  # D = 16 defaults
    assert "sharing" in capsys.readouterr().out
