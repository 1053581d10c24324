"""sass_mix: the instruction mix of Nsight Compute's SASS page, on a CSV written here."""

import csv
import gzip

import numpy as np
import pytest

from experiments.sass_mix import mix, opcode


@pytest.mark.parametrize("source,want", [
    ("      FADD.FTZ R1, R2, R3 ;", "FADD"), ("@!P0 FFMA R1, R2, R3, R4 ;", "FFMA"),
    ("MUFU.EX2 R5, R6 ;", "MUFU.EX2"), ("@P1 MUFU.RCP R5, R6 ;", "MUFU.RCP"), ("", "")])
def test_opcode(source, want):
    assert opcode(source) == want


def test_mix_counts_instructions_and_stalls(tmp_path):
    rng = np.random.default_rng(7)
    ops = ["FADD.FTZ R1, R2, R3 ;", "@P0 FADD R1, R2, R3 ;", "MUFU.EX2 R4, R5 ;", "HGMMA.64x64x16 ;"]
    done = rng.integers(0, 10**6, len(ops))
    stalls = rng.integers(0, 500, len(ops))
    path = tmp_path / "sass.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Kernel Name", "k"])  # ncu writes a title row before the header
        w.writerow(["Address", "Source", "Warp Stall Sampling (All Samples)", "Instructions Executed"])
        for i, (op, n, s) in enumerate(zip(ops, done, stalls)):
            w.writerow([hex(i), op, str(s), str(n)])
    text = mix(str(path))
    total = int(done.sum())
    assert f"{total} warp instructions" in text
    fadd = [line for line in text.splitlines() if line.strip().startswith("FADD")][0]
    assert f"{(done[0] + done[1]) / total:.2%}" in fadd
    assert f"{(stalls[0] + stalls[1]) / stalls.sum():.2%}" in fadd
    with open(path, "rb") as f, gzip.open(tmp_path / "sass.csv.gz", "wb") as g:
        g.write(f.read())
    assert mix(str(tmp_path / "sass.csv.gz")) == text.replace("sass.csv", "sass.csv.gz", 1)


def test_mix_names_a_file_without_the_sass_page(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(SystemExit, match="no 'Source' column"):
        mix(str(path))
