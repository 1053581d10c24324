"""Command-line plumbing of experiments/*.py: absl flag errors and user-facing errors print one line."""

from __future__ import annotations

import sys

from absl import flags

# What a bad flag, config override or config file raises (absl, ml_collections, the config module).
_FLAG_ERRORS = (flags.Error, AttributeError, KeyError, OSError, ValueError, TypeError, SyntaxError,
                ImportError)


def _one_line(e: BaseException) -> str:
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    text = " ".join(text.replace("\\n", " ").replace("\\'", "'").split())
    if isinstance(e, (KeyError, AttributeError)):
        text = text.strip("'\"").replace("' Did you mean", ": did you mean")
        text = f"unknown config field {text}"
    return text


def parse_flags(argv: list[str]) -> list[str]:
    """absl ``flags_parser`` for ``app.run``: a bad flag, override or config file exits with one line."""
    try:
        rest = flags.FLAGS(argv)
        if "config" in flags.FLAGS:
            flags.FLAGS["config"].value.to_dict()  # a broken config file fails here, not later
        return rest
    except _FLAG_ERRORS as e:
        sys.exit(f"error: {_one_line(e)} (config fields are documented in configs/base.py)")


def run_main(main) -> None:
    """Runs ``main(argv)``; user-facing errors (bad input, NaN loss, failed writes) print one line."""
    from absl import app, logging

    def wrapped(argv):
        logging.set_verbosity(logging.WARNING)
        try:
            return main(argv)
        except (ValueError, FileNotFoundError, FloatingPointError, KeyError, RuntimeError) as e:
            sys.exit(f"error: {type(e).__name__}: {_one_line(e)}")

    app.run(wrapped, flags_parser=parse_flags)
