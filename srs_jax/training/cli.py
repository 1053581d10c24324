"""Command-line plumbing of experiments/*.py: every failure is one line on stderr.

* ``run_main(main, doc=...)`` runs an absl ``main(argv)``. Any exception becomes one line
  ``error: <what is wrong and what to do>`` on stderr and a non-zero exit status (2: a bad flag or
  config; 1: anything else; 130: Ctrl-C and 143: SIGTERM, which exit at once with
  ``on_interrupt()``'s hint). ``--debug`` or ``SRS_JAX_DEBUG=1`` re-raises instead, with
  the traceback. ``--help`` prints the command's docstring and flags and exits 0.
* ``define_config_file(...)``: ``config_flags.DEFINE_config_file`` whose bad overrides (applied
  when the flag is defined, e.g. ``--config.train.epoch=3`` without ``--config``) exit with one line.

After an error the process ends with ``os._exit``: background threads of Orbax and TensorStore
(whose event loop is already closed) would otherwise print pages of tracebacks at interpreter exit.
Without ``--debug``, the tracebacks those threads print while a failed save or restore unwinds, and
Orbax's own error log records, are filtered out of stderr (``QuietStderr``, ``quiet_library_logs``):
the failure reaches the user as the command's one ``error:`` line.
"""

from __future__ import annotations

import io
import json
import logging as py_logging
import os
import re
import signal
import sys

from absl import app, flags, logging
from ml_collections import config_flags

DEBUG_ENV = "SRS_JAX_DEBUG"
CONFIG_DOCS = "config fields: configs/base.py"
EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 1, 2, 130, 143
_HELP_FLAGS = ("-h", "--help", "-help", "--helpshort", "--helpfull", "-?")


class UsageError(ValueError):
    """A bad flag or config value (exit status 2)."""


def debug_enabled() -> bool:
    """Tracebacks wanted: ``--debug`` was given or ``SRS_JAX_DEBUG`` is set to a true value."""
    if "--debug" in sys.argv:
        return True
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _strip_debug(argv: list[str]) -> list[str]:
    if "--debug" in argv:
        os.environ[DEBUG_ENV] = "1"
    return [a for a in argv if a != "--debug"]


def one_line(error: BaseException | str) -> str:
    """The message of ``error`` folded to one line (an embedded traceback reduced to its last
    exception), without the noise of KeyError / AttributeError quoting."""
    if isinstance(error, BaseException):
        if isinstance(error, KeyError) and error.args:
            text = str(error.args[0])
        elif isinstance(error, json.JSONDecodeError):
            text = f"not valid JSON ({error.msg}, line {error.lineno} column {error.colno})"
        elif isinstance(error, OSError) and error.filename and error.strerror:
            text = f"{error.filename}: {error.strerror}"
        else:
            text = str(error)
        if not text.strip():
            text = type(error).__name__
    else:
        text = error
    text = text.replace("\\n", "\n").replace("\\'", "'")
    if "Traceback (most recent call last)" in text:
        # ml_collections folds the config module's traceback into its message: keep the cause.
        head = text.split("Traceback (most recent call last)")[0].rstrip(": \n")
        causes = re.findall(r"^(?:\w+\.)*\w*(?:Error|Exception): (.+)$", text, re.M)
        text = f"{head}: {causes[-1]}" if causes else head
    text = " ".join(text.split())
    return text.strip("'\" ") if text.startswith(("'", '"')) else text


def _config_argument() -> str:
    """The value of ``--config`` on the command line ('' when absent)."""
    argv = sys.argv[1:]
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return ""


def _config_flag_message(error: BaseException) -> str:
    text = one_line(error)
    missing = re.search(r"No such file or directory: '([^']+)'", text)
    if "Failed loading config file" in text and missing:
        return f"config file {missing.group(1)} not found: pass a file such as configs/synthetic_cce.py"
    if "has no attribute 'get_config" in text:
        return (f"config file {_config_argument() or '(--config)'} defines no get_config(): it must "
                "return an ml_collections.ConfigDict (see configs/base.py)")
    if isinstance(error, (KeyError, AttributeError)):
        text = text.strip("'\"").replace("' Did you mean", ": did you mean")
        text = f"unknown config field {text}"
    return f"{text} ({CONFIG_DOCS})"


def print_error(message: str) -> None:
    """``error: message`` as one line on stderr."""
    sys.stdout.flush()
    print(f"error: {' '.join(message.split())}", file=sys.stderr, flush=True)


def exit_now(status: int) -> None:
    """Ends the process at once (no interpreter shutdown: see the module docstring)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def fail(message: str, status: int = EXIT_ERROR) -> None:
    """Prints ``error: message`` and exits with ``status``."""
    print_error(message)
    exit_now(status)


def _define(definer, name: str, default, help_string: str, **kwargs):
    # An override that does not apply to the default config is checked when the flag is
    # defined: exit with one line instead of a traceback.
    try:
        return definer(name, default, help_string, **kwargs)
    except Exception as e:  # noqa: BLE001 - any failure here is a bad command line
        if debug_enabled():
            raise
        fail(f"--{name}: {_config_flag_message(e)}", EXIT_USAGE)


def define_config_file(name: str, default: str | None, help_string: str, **kwargs):
    """``config_flags.DEFINE_config_file``; an override that does not apply to the default config
    (checked when the flag is defined) exits with one line instead of a traceback."""
    return _define(config_flags.DEFINE_config_file, name, default, help_string, **kwargs)


def define_config_dict(name: str, default, help_string: str, **kwargs):
    """``config_flags.DEFINE_config_dict`` with the one-line failure of ``define_config_file``."""
    return _define(config_flags.DEFINE_config_dict, name, default, help_string, **kwargs)


def parse_flags(argv: list[str]) -> list[str]:
    """absl ``flags_parser``: a bad flag, override or config file exits with one line."""
    try:
        rest = flags.FLAGS(argv)
        for name in ("config", "grid"):
            if name in flags.FLAGS and flags.FLAGS[name].value is not None:
                flags.FLAGS[name].value.to_dict()  # a broken config file fails here, not later
        return rest
    except Exception as e:  # noqa: BLE001 - every parse failure is the command line's
        if debug_enabled():
            raise
        fail(_config_flag_message(e), EXIT_USAGE)
    return []


def _print_help(doc: str | None, module_name: str) -> None:
    if doc:
        print(doc.strip() + "\n")
    print(flags.FLAGS.module_help(module_name) or flags.FLAGS.main_module_help())
    # Config flags are registered by this module (define_config_file / define_config_dict).
    own = flags.FLAGS.get_flags_for_module(__name__)
    for flag in own:
        print(f"  --{flag.name}: {flag.help}")
    print("  --debug: show the traceback of an error (or set SRS_JAX_DEBUG=1).")
    if own:
        print(f"\nConfig overrides: --config.<section>.<field>=<value>; {CONFIG_DOCS}; "
              "run folders: docs/run_folders.md.")
    else:
        print(f"\nRun folders: docs/run_folders.md; {CONFIG_DOCS}.")


def _quiet_excepthook(exc_type, exc, tb):
    """Drops Orbax's shutdown noise: TensorStore callbacks that reach an already closed event loop
    after a failed save or restore report ``RuntimeError: Event loop is closed`` through
    ``sys.excepthook``; the failure itself is reported as one line."""
    if issubclass(exc_type, RuntimeError) and "Event loop is closed" in str(exc) and not debug_enabled():
        return
    sys.__excepthook__(exc_type, exc, tb)


_TRACEBACK_LINE = re.compile(
    r"Traceback \(most recent call last\)|^\s+File \"|^\s{4}|^\s*[~^]+\s*$|"
    r"^(\w+\.)*\w*(Error|Exception|Exit|Interrupt)(: |$)|^During handling of the above|"
    r"^The above exception was the direct cause|Event loop is closed")


class QuietStderr(io.TextIOBase):
    """A text stream in front of stderr that drops traceback lines (whole lines; a partial line
    is passed on at ``flush``, so progress bars still draw)."""

    def __init__(self, stream):
        self._stream, self._pending = stream, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._pending += text
        while "\n" in self._pending:
            line, self._pending = self._pending.split("\n", 1)
            if not _TRACEBACK_LINE.search(line):
                self._stream.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        if self._pending and not _TRACEBACK_LINE.search(self._pending):
            self._stream.write(self._pending)
            self._pending = ""
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self):
        return getattr(self._stream, "encoding", "utf-8")


class _LibraryRecords(py_logging.Filter):
    """Drops log records of Orbax / TensorStore below CRITICAL (their errors come back to the
    caller as exceptions, which the command reports)."""

    def filter(self, record: py_logging.LogRecord) -> bool:
        path = record.pathname or ""
        return record.levelno >= py_logging.CRITICAL or not ("orbax" in path or "tensorstore" in path)


def quiet_library_logs() -> None:
    """Installs ``_LibraryRecords`` on absl's and the root logger's handlers."""
    handlers = list(py_logging.getLogger().handlers) + [logging.get_absl_handler()]
    for handler in handlers:
        if not any(isinstance(f, _LibraryRecords) for f in handler.filters):
            handler.addFilter(_LibraryRecords())


def run_main(main, *, doc: str | None = None, on_interrupt=None,
             module_name: str = "__main__") -> None:
    """Runs absl ``main(argv)`` with the error handling of the module docstring.

    ``on_interrupt()``: returns the text printed after ``error: interrupted`` on Ctrl-C (e.g.
    which checkpoint ``--resume`` continues from)."""
    def stop(what: str, status: int):
        """One line, ``what`` and the (best-effort) ``on_interrupt`` hint, and exit ``status``."""
        try:
            hint = on_interrupt() if on_interrupt is not None else ""
        except Exception:  # noqa: BLE001 - the hint is best effort
            hint = ""
        fail(f"{what}{': ' + hint if hint else ''}", status)

    argv = _strip_debug(sys.argv)
    if any(a in _HELP_FLAGS for a in argv[1:]):
        _print_help(doc, module_name)
        exit_now(0)
    sys.argv = argv
    sys.excepthook = _quiet_excepthook
    if not debug_enabled():
        # The handlers exit at once: a KeyboardInterrupt raised inside a garbage-collection
        # callback or a worker is swallowed, and every file of a run folder is written atomically,
        # so stopping anywhere leaves the previous checkpoint and run files whole.
        signal.signal(signal.SIGINT, lambda signum, frame: stop("interrupted", EXIT_INTERRUPTED))
        # A batch scheduler's stop: as Ctrl-C, status 143.
        signal.signal(signal.SIGTERM,
                      lambda signum, frame: stop("terminated (SIGTERM)", EXIT_TERMINATED))

    if not debug_enabled() and not isinstance(sys.stderr, QuietStderr):
        sys.stderr = QuietStderr(sys.stderr)

    def wrapped(args):
        logging.set_verbosity(logging.WARNING)
        if not debug_enabled():
            quiet_library_logs()
        try:
            return main(args)
        except KeyboardInterrupt:
            if debug_enabled():
                raise
            stop("interrupted", EXIT_INTERRUPTED)
        except SystemExit:
            raise
        except BaseException as e:  # noqa: BLE001 - the one place errors reach the user
            if debug_enabled():
                raise
            status = EXIT_USAGE if isinstance(e, (UsageError, flags.Error)) else EXIT_ERROR
            fail(describe(e), status)

    try:
        app.run(wrapped, argv=argv, flags_parser=parse_flags)
    except KeyboardInterrupt:  # during start-up (imports), before main runs
        if debug_enabled():
            raise
        fail("interrupted before anything was written", EXIT_INTERRUPTED)


# Exceptions whose message is written for the user (one line naming the problem and the fix).
_USER_ERRORS = (ValueError, OSError, FloatingPointError, KeyError, LookupError)


def describe(error: BaseException) -> str:
    """The one-line text of ``error`` after ``error:``; an unexpected exception type is named and
    points at ``--debug``."""
    text = one_line(error)
    if isinstance(error, MemoryError) or "RESOURCE_EXHAUSTED" in text:
        return (f"out of memory ({text[:200]}): lower config.train.batch_size or "
                "config.model.max_len")
    if isinstance(error, _USER_ERRORS) or type(error).__module__.startswith("srs_jax"):
        return text
    return f"{type(error).__name__}: {text} (unexpected; rerun with --debug for the traceback)"
