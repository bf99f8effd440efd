"""A named TPU slice, described on any machine by libtpu: its devices (for a mesh) and its chips' HBM.

    devices = topology_devices("v5p:2x2x4")      # 16 TpuDevice descriptions, nothing to run on
    chip = chip_of(devices[0])                   # Chip("v5p", 95 GiB)

`jax.experimental.topologies.get_topology_desc(topology_name=..., platform="tpu")` needs libtpu, which jax's `tpu`
extra pins (`pip install "zoomiqa-jax[plan]"`); no TPU is needed, only the compiler. The names are libtpu's:
`<chip>:<chips per dimension>`, e.g. v4:2x2x2, v5e:4x4 (v5litepod-16), v5p:2x2x4 (v5p-32: 16 chips), v6e:4x4.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
from collections.abc import Iterator
from typing import Any

GIB = 1024**3


@dataclasses.dataclass(frozen=True)
class Chip:
    name: str  # v4, v5e, v5p, v6e
    hbm_bytes: int  # HBM per chip (vendor data sheets)


# device_kind as libtpu reports it -> the chip; longest match first ("TPU v5 lite" before "TPU v5")
CHIPS: dict[str, Chip] = {
    "TPU v4": Chip("v4", 32 * GIB),
    "TPU v5 lite": Chip("v5e", 16 * GIB),
    "TPU v5e": Chip("v5e", 16 * GIB),
    "TPU v5p": Chip("v5p", 95 * GIB),
    "TPU v5": Chip("v5p", 95 * GIB),  # v5p reports plain "TPU v5"
    "TPU v6 lite": Chip("v6e", 32 * GIB),
    "TPU v6e": Chip("v6e", 32 * GIB),
}


class TopologyError(ValueError):
    """A topology that libtpu cannot describe, or no libtpu."""


def libtpu_available() -> bool:
    """True when the libtpu package (jax's `tpu` extra) is installed."""
    return importlib.util.find_spec("libtpu") is not None


def chip_of(device: Any) -> Chip:
    """The chip (name, HBM) of a TPU device description, from its device_kind."""
    kind = str(device.device_kind)
    for name in sorted(CHIPS, key=len, reverse=True):
        if kind.lower().startswith(name.lower()):
            return CHIPS[name]
    raise TopologyError(f"unknown TPU device kind {kind!r}: no HBM size known (zoomiqa_jax/plan/topology.py CHIPS)")


@contextlib.contextmanager
def _quiet_libtpu_env(chip: str) -> Iterator[None]:
    """On a machine that is not a TPU VM, libtpu's start-up asks the GCE metadata server for the accelerator type
    and worker hostnames and prints a page of warnings when there is none: describe a single local worker. libtpu
    also takes /tmp/libtpu_lockfile, which any other jax process that loaded libtpu holds (a CPU run without
    JAX_PLATFORMS=cpu does): only the compiler is used here, so several may load it. Set for the duration of the
    call (the variables are restored after it)."""
    values = {"TPU_SKIP_MDS_QUERY": "1", "ALLOW_MULTIPLE_LIBTPU_LOAD": "1", "TPU_ACCELERATOR_TYPE": f"{chip}-8",
              "TPU_WORKER_HOSTNAMES": "localhost", "TPU_WORKER_ID": "0"}
    saved = {k: os.environ.get(k) for k in values}
    for key, value in values.items():
        os.environ.setdefault(key, value)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def topology_devices(name: str) -> list[Any]:
    """The devices of the TPU slice `name` (e.g. "v5p:2x2x4"), described by libtpu without any TPU.

    Raises TopologyError naming the topology when libtpu is missing or does not know the name."""
    if ":" not in name:
        raise TopologyError(f"--topology {name!r}: expected <chip>:<shape>, e.g. v5p:2x2x4, v5e:4x4, v6e:4x4")
    if not libtpu_available():
        raise TopologyError(f"--topology {name!r}: libtpu is not installed; pip install 'zoomiqa-jax[plan]' "
                            "(jax's tpu extra: the TPU compiler, no TPU needed)")
    from jax.experimental import topologies

    chip = name.split(":", 1)[0].lower()
    with _quiet_libtpu_env(chip if chip in {c.name for c in CHIPS.values()} else "v5p"):
        try:
            desc = topologies.get_topology_desc(topology_name=name, platform="tpu")
        except Exception as err:  # libtpu raises XlaRuntimeError / ValueError for an unknown name
            raise TopologyError(f"--topology {name!r}: libtpu cannot describe it: {err}") from None
    return list(desc.devices)
