"""Instruction mix and stall samples per SASS opcode, from Nsight Compute's source page as CSV.

  ncu --import report.ncu-rep --page source --csv --print-source sass > sass.csv
  python -m experiments.sass_mix sass.csv [more.csv.gz ...] [--top N]
"""

from __future__ import annotations

import collections
import csv
import gzip
import sys


def opcode(source: str) -> str:
    """'@!P0 FADD.FTZ R1, ...' -> 'FADD'; MUFU keeps its function ('MUFU.EX2')."""
    words = source.split()
    op = words[1] if words and words[0].startswith("@") and len(words) > 1 else (words or [""])[0]
    return op if op.startswith("MUFU") else op.split(".")[0]


def mix(path: str, top: int = 16) -> str:
    with (gzip.open(path, "rt") if path.endswith(".gz") else open(path)) as f:
        rows = list(csv.reader(f))
    head = next((i for i, r in enumerate(rows) if "Source" in r), None)
    if head is None:
        raise SystemExit(f"{path}: no 'Source' column; write it with `ncu --import REPORT --page "
                         "source --csv --print-source sass`")
    names = rows[head]
    src, done = names.index("Source"), names.index("Instructions Executed")
    stall = names.index("Warp Stall Sampling (All Samples)")
    inst, samples = collections.Counter(), collections.Counter()
    for r in rows[head + 1:]:
        if len(r) > stall:
            inst[opcode(r[src])] += int(r[done] or 0)
            samples[opcode(r[src])] += int(r[stall] or 0)
    n, s = sum(inst.values()) or 1, sum(samples.values()) or 1
    lines = [f"{path}: {n} warp instructions"]
    lines += [f"  {op:14s} {c / n:7.2%} of instructions  {samples[op] / s:7.2%} of stall samples"
              for op, c in inst.most_common(top)]
    return "\n".join(lines)


if __name__ == "__main__":
    argv = sys.argv[1:]
    top = 16
    if "--top" in argv:
        i = argv.index("--top")
        top = int(argv[i + 1])
        del argv[i:i + 2]
    for p in argv:
        print(mix(p, top))
