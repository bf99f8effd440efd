"""One device mesh over the axes (data, fsdp, tensor), for any device count, single- or multi-host.

    data    pure data parallelism: parameters replicated, the batch split
    fsdp    fully sharded data parallelism: the batch split AND parameters / optimizer state sharded
    tensor  tensor (model) parallelism: heads, MLP width and vocabulary split

Axes are `AxisType.Auto`, so GSPMD propagates shardings through the program from the in/out shardings that
`jax.jit` is given (that is pjit). A size of -1 takes all remaining devices.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from zoomiqa_jax.config_fields import ConfigError

AXES = ("data", "fsdp", "tensor")


def mesh_shape(shape: Sequence[int], n_devices: int) -> tuple[int, int, int]:
    """Resolve one -1 entry and check that the product is the device count."""
    shape = [int(s) for s in shape]
    if len(shape) != 3:
        raise ValueError(f"mesh shape must give (data, fsdp, tensor), got {shape}")
    if shape.count(-1) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got {shape}")
    if -1 in shape:
        known = int(np.prod([s for s in shape if s != -1]))
        if n_devices % known:
            raise ValueError(f"{n_devices} devices do not divide into mesh {shape}")
        shape[shape.index(-1)] = n_devices // known
    if int(np.prod(shape)) != n_devices:
        raise ValueError(f"mesh {tuple(shape)} needs {int(np.prod(shape))} devices, {n_devices} are available")
    return tuple(shape)  # type: ignore[return-value]


def make_mesh(shape: Sequence[int] = (-1, 1, 1), devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, fsdp, tensor) mesh with auto (GSPMD) axes over `devices` (default: all)."""
    devices = list(jax.devices() if devices is None else devices)
    resolved = mesh_shape(shape, len(devices))
    axis_types = getattr(jax.sharding, "AxisType", None)
    if axis_types is not None:
        return jax.make_mesh(resolved, AXES, axis_types=(axis_types.Auto,) * 3, devices=devices)
    return Mesh(np.asarray(devices).reshape(resolved), AXES)  # older jax: axes are implicitly auto


# The explicit multi-process variables (the names jax.distributed uses; a SLURM template or launcher sets them).
COORDINATOR_VAR, NUM_PROCESSES_VAR, PROCESS_ID_VAR, LOCAL_DEVICES_VAR = (
    "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "JAX_LOCAL_DEVICE_IDS")


class DistributedEnvError(ConfigError):
    """The environment describes a multi-process run incompletely or with a malformed value."""


def _int_var(env: Mapping[str, str], name: str) -> int:
    raw = env[name].strip()
    try:
        return int(raw)
    except ValueError:
        raise DistributedEnvError(f"{name}={env[name]!r} is not an integer") from None


def distributed_args(env: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """The keyword arguments of `jax.distributed.initialize` that the environment `env` (default os.environ)
    describes, or None for a single-process run.

    * Explicit: JAX_COORDINATOR_ADDRESS (host:port of process 0), JAX_NUM_PROCESSES, JAX_PROCESS_ID, optionally
      JAX_LOCAL_DEVICE_IDS ("0,1": the local devices this process drives). All are read here and passed as
      arguments: jax 0.10 reads only the coordinator from the environment ("Number of processes must be
      defined."). The first three must be set together; a missing one or a value that is not an integer raises
      DistributedEnvError naming the variable.
    * A cluster jax detects by itself (a Cloud TPU pod: several TPU_WORKER_HOSTNAMES; SLURM: SLURM_JOB_ID; Open
      MPI: OMPI_COMM_WORLD_SIZE): {} (no arguments, jax's auto-detection), plus any explicit variable that is set,
      which then overrides the detected value.
    """
    env = os.environ if env is None else env
    tpu_pod = len([h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]) > 1
    cluster = tpu_pod or any(env.get(m) for m in ("SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE"))
    given = [v for v in (COORDINATOR_VAR, NUM_PROCESSES_VAR, PROCESS_ID_VAR) if env.get(v, "").strip()]
    if not (cluster or given):
        return None
    if not cluster and len(given) < 3:
        missing = [v for v in (COORDINATOR_VAR, NUM_PROCESSES_VAR, PROCESS_ID_VAR) if v not in given]
        raise DistributedEnvError(
            f"{', '.join(missing)} not set: a multi-process run needs {COORDINATOR_VAR} (host:port of process 0), "
            f"{NUM_PROCESSES_VAR} and {PROCESS_ID_VAR} on every process; found only {', '.join(given)}")
    kwargs: dict[str, Any] = {}
    if COORDINATOR_VAR in given:
        address = env[COORDINATOR_VAR].strip()
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise DistributedEnvError(f"{COORDINATOR_VAR}={address!r} is not host:port (e.g. 10.0.0.2:1234)")
        kwargs["coordinator_address"] = address
    if NUM_PROCESSES_VAR in given:
        kwargs["num_processes"] = _int_var(env, NUM_PROCESSES_VAR)
        if kwargs["num_processes"] < 1:
            raise DistributedEnvError(f"{NUM_PROCESSES_VAR}={kwargs['num_processes']} must be >= 1")
    if PROCESS_ID_VAR in given:
        kwargs["process_id"] = _int_var(env, PROCESS_ID_VAR)
        count = kwargs.get("num_processes")
        if kwargs["process_id"] < 0 or (count is not None and kwargs["process_id"] >= count):
            raise DistributedEnvError(f"{PROCESS_ID_VAR}={kwargs['process_id']} must be in [0, "
                                      f"{NUM_PROCESSES_VAR}={count if count is not None else '?'})")
    if env.get(LOCAL_DEVICES_VAR, "").strip():
        ids = []
        for part in env[LOCAL_DEVICES_VAR].split(","):
            try:
                ids.append(int(part))
            except ValueError:
                raise DistributedEnvError(f"{LOCAL_DEVICES_VAR}={env[LOCAL_DEVICES_VAR]!r}: expected "
                                          "comma-separated integers, e.g. 0,1") from None
        kwargs["local_device_ids"] = ids
    return kwargs


def initialize_distributed() -> bool:
    """`jax.distributed.initialize(**distributed_args())` when the environment describes a multi-process run
    (`distributed_args`: explicit JAX_* variables, a Cloud TPU pod, SLURM, Open MPI) and jax.distributed is not
    initialized yet. Returns True when it initialized. Call it before anything touches a device."""
    is_initialized = getattr(jax.distributed, "is_initialized", None)
    if is_initialized is not None and is_initialized():
        return False
    kwargs = distributed_args()
    if kwargs is None:
        return False
    jax.distributed.initialize(**kwargs)
    return True
