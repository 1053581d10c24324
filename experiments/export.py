"""Writes the serving artifact of a run: ``python -m experiments.export --workdir RUN --out DIR
[--k 10] [--item_chunk N] [--platforms cpu,cuda] [--checkpoint best|latest]`` (docs/serving.md)."""

from __future__ import annotations

import argparse
import sys

from srs_jax.export import export_run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.export", description=__doc__)
    parser.add_argument("--workdir", required=True, help="run folder (python -m experiments.train)")
    parser.add_argument("--out", required=True, help="artifact folder to write")
    parser.add_argument("--k", type=int, default=10, help="items returned per history")
    parser.add_argument("--item_chunk", type=int, default=None,
                        help="catalog rows scored at a time (default: the run's eval.item_chunk)")
    parser.add_argument("--platforms", default="cpu,cuda", help="comma-separated jax platforms")
    parser.add_argument("--checkpoint", default="best", choices=("best", "latest"))
    args = parser.parse_args(argv)
    try:
        manifest = export_run(args.workdir, args.out, k=args.k, item_chunk=args.item_chunk,
                              platforms=tuple(p for p in args.platforms.split(",") if p),
                              which=args.checkpoint)
    except (ValueError, FileNotFoundError, OSError, KeyError, RuntimeError) as e:
        text = " ".join(str(e).split()) or type(e).__name__
        print(f"error: {text}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {manifest['model']}, top-{manifest['k']} of {manifest['n_items']} "
          f"items, histories [B, {manifest['max_len']}], platforms {','.join(manifest['platforms'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
