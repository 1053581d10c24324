"""How this process joins a run: one process, or one of several on JAX's distributed runtime.

``resolve_launch(mesh_spec, environ) -> Launch``, first match wins:

1. ``config.mesh.num_processes > 1``: ``coordinator_address`` / ``num_processes`` /
   ``process_id`` from the config (command-line overrides included);
2. ``SRS_JAX_NUM_PROCESSES > 1`` in the environment, with ``SRS_JAX_COORDINATOR_ADDRESS`` (host:port
   of process 0) and ``SRS_JAX_PROCESS_ID`` (0 .. N-1): one launch command for every process, the
   id from the scheduler (e.g. a Kubernetes Job's completion index);
3. a cluster launcher with more than one task (SLURM ``srun``, Open MPI ``mpirun``):
   ``jax.distributed.initialize()`` without arguments, which reads the launcher's variables;
4. otherwise one process.

Pure: no JAX, so the command line knows which process it is (only process 0 locks and writes the
run folder) before JAX loads.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

from srs_jax.config.specs import ConfigError, MeshSpec

ENV_COORDINATOR = "SRS_JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "SRS_JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "SRS_JAX_PROCESS_ID"
# Launchers that jax.distributed.initialize() detects: (name, task count, task id) variables; a
# variable that only the launcher sets marks its presence.
CLUSTERS = (("SLURM", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_STEP_NODELIST"),
            ("Open MPI", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_MCA_orte_hnp_uri"))


@dataclasses.dataclass(frozen=True)
class Launch:
    """``num_processes`` processes, this one ``process_id``; ``source`` names where that came
    from ('' for one process); ``auto``: the cluster launcher's variables are read by JAX
    (``coordinator_address`` is then '')."""

    num_processes: int = 1
    process_id: int = 0
    coordinator_address: str = ""
    source: str = ""
    auto: bool = False

    @property
    def several(self) -> bool:
        return self.num_processes > 1

    @property
    def primary(self) -> bool:
        """Process 0: the one that locks and writes the run folder."""
        return self.process_id == 0


def _env_int(environ: Mapping[str, str], name: str) -> int:
    text = environ.get(name, "").strip()
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"environment variable {name}={text!r} is not an integer: set it to "
                          "a whole number or unset it") from None


def _from_environment(environ: Mapping[str, str]) -> Launch | None:
    if not environ.get(ENV_NUM_PROCESSES, "").strip():
        return None
    n = _env_int(environ, ENV_NUM_PROCESSES)
    if n <= 1:
        return None
    address = environ.get(ENV_COORDINATOR, "").strip()
    if not address:
        raise ConfigError(f"{ENV_NUM_PROCESSES}={n} needs {ENV_COORDINATOR}=host:port of process 0")
    if not environ.get(ENV_PROCESS_ID, "").strip():
        raise ConfigError(f"{ENV_NUM_PROCESSES}={n} needs {ENV_PROCESS_ID} (0 .. {n - 1}) for "
                          "each process")
    pid = _env_int(environ, ENV_PROCESS_ID)
    if not 0 <= pid < n:
        raise ConfigError(f"{ENV_PROCESS_ID}={pid} must be in [0, {n}) ({ENV_NUM_PROCESSES}={n})")
    return Launch(n, pid, address, source="environment")


def _from_cluster(environ: Mapping[str, str]) -> Launch | None:
    for name, count, rank, marker in CLUSTERS:
        if marker in environ and count in environ and rank in environ:
            n = _env_int(environ, count)
            if n > 1:
                return Launch(n, _env_int(environ, rank), "", source=name, auto=True)
    return None


def resolve_launch(mesh: MeshSpec, environ: Mapping[str, str]) -> Launch:
    """The launch of this process (module docstring); ``ConfigError`` for an incomplete one."""
    if mesh.num_processes > 1:
        launch = Launch(mesh.num_processes, mesh.process_id, mesh.coordinator_address,
                        source="config.mesh")
    else:
        launch = _from_environment(environ) or _from_cluster(environ) or Launch()
    if launch.several and not mesh.enabled:
        raise ConfigError(f"config.mesh.enabled=False trains on one device, but {launch.source} "
                          f"launches {launch.num_processes} processes: set "
                          "config.mesh.enabled=True, or start one process")
    return launch


__all__ = ["CLUSTERS", "ENV_COORDINATOR", "ENV_NUM_PROCESSES", "ENV_PROCESS_ID", "Launch",
           "resolve_launch"]
