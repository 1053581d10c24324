"""Markdown table of the finished runs (``results.json``) in the folders under one directory:
what the GPU session scripts print at their end.

    python -m experiments.run_table /tmp/quality [--popularity]
"""

from __future__ import annotations

import argparse
import json
import os


def table(root: str, popularity: bool = False) -> str:
    head = ["run", "test NDCG@10", "HR@10", "Cov@10"] + (["pop. NDCG@10"] if popularity else [])
    head += ["epochs (best)", "stop", "epoch s", "peak GiB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name, "results.json")
        if not os.path.exists(path):
            continue
        with open(path) as f:
            r = json.load(f)
        t, peak = r["test"], r.get("peak_memory_bytes")
        cells = [name, f"{t['ndcg@10']:.4f}", f"{t['hitrate@10']:.4f}",
                 f"{t.get('coverage@10', 0):.4f}"]
        if popularity:
            pop = (r.get("popularity") or {}).get("test", {}).get("ndcg@10")
            cells.append(str(pop if pop is None else round(pop, 4)))
        cells += [f"{r['epochs_run']} ({r['best_epoch']})", str(r["stopped"]),
                  f"{r['epoch_time_s']:.2f}", str(None if peak is None else round(peak / 2**30, 2))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("root", help="directory whose sub-folders are run folders")
    p.add_argument("--popularity", action="store_true", help="add the popularity baseline column")
    args = p.parse_args(argv)
    print(table(args.root, args.popularity))


if __name__ == "__main__":
    main()
