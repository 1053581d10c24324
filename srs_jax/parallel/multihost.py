"""Several processes on JAX's distributed runtime: joining it, barriers, who writes.

``initialize_multihost(mesh_spec)`` joins the run that ``srs_jax.config.resolve_launch`` describes
(config, ``SRS_JAX_*`` variables or a cluster launcher) before anything touches a JAX backend:

* on the CPU platform, cross-process collectives need gloo (set before the backend exists);
* a process other than 0 first waits, up to ``mesh.init_timeout_s``, until the coordinator's port
  accepts connections, and otherwise raises ``DistributedStartError`` (one line). The runtime
  itself aborts the process without a Python exception when the processes do not all register in
  time or when one stops sending heartbeats (``mesh.heartbeat_timeout_s``); the command line turns
  that abort into one line (``srs_jax.training.runtime_guard``).
"""

from __future__ import annotations

import importlib.util
import os
import socket
import time
from typing import Mapping

import jax
import numpy as np
from jax.experimental import multihost_utils

from srs_jax.config.launch import Launch, resolve_launch
from srs_jax.config.specs import MeshSpec


class DistributedStartError(RuntimeError):
    """This process could not join the distributed run (the message names the address and fix)."""


def _cpu_only() -> bool:
    """Whether JAX will run on the CPU (no accelerator plugin, or ``JAX_PLATFORMS=cpu``)."""
    platforms = (jax.config.jax_platforms or "").split(",")[0].strip().lower()
    if platforms:
        return platforms == "cpu"
    return not any(importlib.util.find_spec(m) for m in ("jax_plugins", "libtpu"))


def split_address(address: str, source: str) -> tuple[str, int]:
    """``(host, port)`` of ``host:port`` (``[v6]:port`` too); ``DistributedStartError`` else."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        raise DistributedStartError(f"coordinator address {address!r} (from {source}) is not "
                                    "host:port: give the address and a free port of process 0, "
                                    "e.g. 10.0.0.1:1234")
    return host, int(port)


def wait_for_coordinator(address: str, timeout_s: float, source: str) -> None:
    """Returns once ``address`` accepts a TCP connection; ``DistributedStartError`` after
    ``timeout_s`` seconds of refused or unanswered attempts."""
    host, port = split_address(address, source)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=max(0.1, min(5.0, timeout_s))):
                return
        except OSError as e:
            reason = e.strerror or type(e).__name__
            if time.monotonic() >= deadline:
                raise DistributedStartError(
                    f"cannot reach the coordinator (process 0) at {address} (from {source}) within "
                    f"config.mesh.init_timeout_s={timeout_s:g}s ({reason}): start process 0 with "
                    "the same address, check the host, port and firewall, or raise "
                    "config.mesh.init_timeout_s") from None
            time.sleep(0.25)


def initialize_multihost(cfg: MeshSpec, environ: Mapping[str, str] | None = None) -> Launch:
    """Joins the distributed run of ``cfg`` (module docstring); a no-op for one process or when
    already joined. Returns the ``Launch``."""
    launch = resolve_launch(cfg, os.environ if environ is None else environ)
    if not launch.several or jax.distributed.is_initialized():
        return launch
    if _cpu_only():
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    timeouts = dict(heartbeat_timeout_seconds=cfg.heartbeat_timeout_s)
    try:
        if launch.auto:
            jax.distributed.initialize(initialization_timeout=cfg.init_timeout_s, **timeouts)
            return launch
        deadline = time.monotonic() + cfg.init_timeout_s
        split_address(launch.coordinator_address, launch.source)
        if not launch.primary:
            wait_for_coordinator(launch.coordinator_address, cfg.init_timeout_s, launch.source)
        jax.distributed.initialize(
            launch.coordinator_address, launch.num_processes, launch.process_id,
            initialization_timeout=max(1, int(deadline - time.monotonic())), **timeouts)
    except RuntimeError as e:
        if isinstance(e, DistributedStartError):
            raise
        raise DistributedStartError(f"process {launch.process_id} of {launch.num_processes} "
                                    f"could not join the distributed run ({e}): start the "
                                    "training in a fresh process") from e
    return launch


def barrier(name: str) -> None:
    """Waits until every process got here (no-op for one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def is_primary() -> bool:
    """Process 0: the one that writes the run folder and prints progress."""
    return jax.process_index() == 0


def from_primary(flag: bool) -> bool:
    """Process 0's ``flag`` in every process (one process: ``flag``), so that a decision taken on
    a host clock (a time budget) sends every process down the same branch."""
    if jax.process_count() == 1:
        return bool(flag)
    return bool(multihost_utils.broadcast_one_to_all(np.asarray(flag, np.int32)))
