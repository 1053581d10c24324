"""One ``error:`` line when JAX's distributed runtime ends a process of a multi-process run.

The runtime ends a process from C++, with no Python exception to catch, when the processes do not
all register within ``mesh.init_timeout_s`` or when one of them stops sending heartbeats
(``mesh.heartbeat_timeout_s``: it died, hung or lost the network): it logs the cause and a C++
stack trace on stderr and calls ``abort()``. ``install(hint)`` routes this process's stderr
through a forked child that passes every line on until the runtime's first error report, drops
everything after it, and once the process has ended prints one ``error:`` line naming the cause
(the exit status stays the abort's, non-zero). Install it before JAX loads and before any file is
opened (the child closes what it inherits).
"""

from __future__ import annotations

import os
import re
import signal
from typing import Callable

# The runtime's log lines (absl format: severity, date, time, thread, file:line]) that begin its
# report of a fatal error.
_REPORT = re.compile(rb"^[EF]\d{4} [\d:.]+\s+\d+ (coordination_service\S*|client\.h):\d+\]")
_STATUS = re.compile(r"absl::Status: (\w+): ([^\n]*)")


def message(report: str, hint: str) -> str:
    """The ``error:`` text for the runtime's report (its log lines, joined)."""
    if "stopped sending heartbeats" in report or "unhealthy" in report:
        return (f"another process of this run stopped responding (no heartbeat within "
                f"config.mesh.heartbeat_timeout_s): it died, hung or lost the network, and the "
                f"distributed runtime ended this process too; {hint}")
    if "RegisterTask" in report or "DEADLINE_EXCEEDED" in report:
        return ("not every process joined the run within config.mesh.init_timeout_s: start all "
                "processes with the same coordinator address and process count (each with its own "
                "process id), or raise config.mesh.init_timeout_s")
    found = _STATUS.search(report)
    cause = f"{found.group(1)}: {found.group(2)}" if found else "no cause given"
    return (f"the distributed runtime ended this process ({cause}): another process of the run "
            f"probably failed, see its output; {hint}")


def _filter(source: int, hint: Callable[[], str]) -> None:
    """The child: copies ``source`` to stderr up to the runtime's report, then one line."""
    report, pending, stopped = [], b"", False
    while True:
        try:
            data = os.read(source, 65536)
        except InterruptedError:
            continue
        if data:  # lines end at \n or \r (a progress bar redraws with \r)
            *lines, pending = re.split(rb"(?<=[\r\n])", pending + data)
        else:
            lines, pending = [pending], b""
        for line in lines:
            if not stopped and _REPORT.match(line):
                stopped = True
            if stopped:
                report.append(line.decode("utf-8", "replace"))
            elif line:
                os.write(2, line)
        if not data:
            break
    if stopped:
        try:
            text = hint()
        except Exception:  # noqa: BLE001 - the hint is best effort
            text = "restart every process"
        line = "error: " + " ".join(message("".join(report), text).split()) + "\n"
        os.write(2, line.encode())


def install(hint: Callable[[], str]) -> None:
    """Routes stderr through the filter child (module docstring); ``hint()`` is called in the
    child after the failure and says how to continue (e.g. which checkpoint ``--resume`` uses)."""
    read_end, write_end = os.pipe()
    if os.fork() == 0:  # the child: lives until the parent's stderr closes (it ended)
        try:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_IGN)  # the parent reports those; read on to EOF
            os.close(write_end)
            devnull = os.open(os.devnull, os.O_RDWR)
            os.dup2(devnull, 0)
            os.dup2(devnull, 1)
            os.closerange(3, read_end)
            os.closerange(read_end + 1, 1 << 16)
            _filter(read_end, hint)
        finally:
            os._exit(0)
    os.close(read_end)
    os.dup2(write_end, 2)
    os.close(write_end)
