"""Smoke test of ``python -m experiments.benchmark_loss`` on CPU (Pallas interpreter, tiny shapes)."""

from __future__ import annotations

import json

import pytest

from experiments import benchmark_loss


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
                         "--variants", '{"base": {}, "narrow": {"fwd_block_v": 16}}',
                         "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [r["case"] for r in rows] == ["cce_base", "cce_narrow"]
    assert all("error" not in r and r["fwd_bwd_ms"] > 0 for r in rows)
    # The written config is the one timed: defaults plus the variant's fields.
    assert rows[1]["config"]["fwd_block_v"] == 16 and rows[0]["config"]["fwd_block_v"] != 16


def test_variants_with_unknown_config_field_fail_clearly():
    with pytest.raises(SystemExit, match="unknown KernelConfig fields \\['fwd_poly_v'\\]"):
        benchmark_loss.main(["--d", "16", "--interpret", "--variants", '{"x": {"fwd_poly_v": 64}}'])


def test_parts_benchmark_times_each_kernel(tmp_path, capsys):
    from experiments import benchmark_cce_parts

    out = tmp_path / "parts.json"
    benchmark_cce_parts.main(["--n", "40", "--v", "70", "--d", "16", "--reps", "1", "--interpret",
                              "--variants", '{"a": {}, "b": {"fde_block_v": 16}}',
                              "--out", str(out)])
    rows = json.loads(out.read_text())
    assert [r["variant"] for r in rows] == ["a", "b"]
    for r in rows:
        for part in ("lse_fwd", "fused_fwd", "dc_kernel", "de_and_dc_kernels"):
            assert r[f"{part}_ms"] > 0, (part, r)
    assert '"variant": "a"' in capsys.readouterr().out
    benchmark_cce_parts.main(["--n", "40", "--v", "70", "--d", "16", "--reps", "1", "--interpret",
                              "--parts", "fused_fwd", "--out", str(out)])
    (row,) = json.loads(out.read_text())
    assert "fused_fwd_ms" in row and "lse_fwd_ms" not in row and "dc_kernel_ms" not in row
    with pytest.raises(SystemExit, match="unknown KernelConfig fields"):
        benchmark_cce_parts.main(["--interpret", "--variants", '{"x": {"fde_tile": 1}}'])


def test_chunk_probe_runs_one_and_two_launches(capsys):
    from experiments import chunk_overhead_probe

    chunk_overhead_probe.main(["--n", "40", "--v", "70", "--d", "16", "--reps", "1", "--interpret"])
    out = capsys.readouterr().out
    assert "chunks=1 f+b" in out and "chunks=2 f+b" in out
