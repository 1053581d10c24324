"""Summarise Nsight Compute's per-kernel time summary (``--print-summary per-kernel``) by section.

Input: a log of ``== TITLE`` lines, each followed by the ncu output of one
``experiments.profile_step`` run (``experiments/gpu_session_block.sh`` writes it). Prints, per
section, every kernel launched at least ``--steps`` times (the warm-up call plus the profiled
steps; compilation-time kernels such as autotuning launch fewer) with its mean duration and
launch count, largest total first, and the sum per step (launches // steps of each).

  python -m experiments.ncu_times experiments/results/block_h100/shift_times.log --steps 4
"""

from __future__ import annotations

import argparse
import re

_KERNEL = re.compile(r"  (\S+) \(([\d, ]+)\)x\(([\d, ]+)\).*Invocations (\d+)")
_TIME = re.compile(r"\s+gpu__time_duration\.sum\s+(\S+)\s+\S+\s+\S+\s+(\S+)")
_SKIP = ("Redzone", "DelayKernel", "RepeatBuffer", "fp_comparison")  # autotuning helpers


def parse(text: str) -> dict[str, list[tuple[str, str, int, float]]]:
    """{section: [(kernel, grid, launches, mean us)]}."""
    out: dict[str, list] = {}
    sec, cur = None, None
    for line in text.splitlines():
        if line.startswith("== "):
            sec = line[3:]
            out[sec] = []
            continue
        m = _KERNEL.match(line)
        if m:
            cur = (m.group(1), m.group(2).replace(" ", ""), int(m.group(4)))
            continue
        m = _TIME.match(line)
        if m and cur and sec is not None:
            unit, avg = m.groups()
            scale = {"ms": 1e3, "us": 1.0, "ns": 1e-3}.get(unit, float("nan"))
            if not any(s in cur[0] for s in _SKIP):
                out[sec].append((*cur, float(avg.replace(",", "")) * scale))
            cur = None
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("log")
    p.add_argument("--steps", type=int, default=4, help="calls of the step (warm-up included)")
    p.add_argument("--min-us", type=float, default=3.0, help="leave out shorter kernels")
    args = p.parse_args(argv)
    with open(args.log) as f:
        sections = parse(f.read())
    for sec, kernels in sections.items():
        step = [k for k in kernels if k[2] >= args.steps]
        total = sum((k[2] // args.steps) * k[3] for k in step)  # (input preparation: +1 launch)
        print(f"== {sec}\n   per step: {total:.1f} us")
        for name, grid, calls, us in sorted(step, key=lambda k: -k[2] * k[3]):
            if us >= args.min_us:
                print(f"   {name:<28} grid ({grid}) x{calls:<3} {us:9.1f} us")


if __name__ == "__main__":
    main()
