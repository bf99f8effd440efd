"""One device mesh over the axes (data, fsdp, tensor), for any device count, single- or multi-host.

    data    pure data parallelism: parameters replicated, the batch split
    fsdp    fully sharded data parallelism: the batch split AND parameters / optimizer state sharded
    tensor  tensor (model) parallelism: heads, MLP width and vocabulary split

Axes are `AxisType.Auto`, so GSPMD propagates shardings through the program from the in/out shardings that
`jax.jit` is given (that is pjit). A size of -1 takes all remaining devices.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh

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


def initialize_distributed() -> bool:
    """`jax.distributed.initialize()` when the environment describes a multi-process run: a Cloud TPU pod
    (several TPU_WORKER_HOSTNAMES), an explicit coordinator (JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
    JAX_PROCESS_ID), SLURM or Open MPI (jax reads those itself). Returns True when it initialized."""
    tpu_pod = len([h for h in os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1
    explicit = any(os.environ.get(m) for m in ("JAX_COORDINATOR_ADDRESS", "SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE"))
    if not (tpu_pod or explicit):
        return False
    jax.distributed.initialize()
    return True
