"""Multi-process start-up from the environment (`parallel.mesh.initialize_distributed`): the JAX_* variables are
read here and passed to `jax.distributed.initialize` explicitly (jax 0.10 reads only the coordinator itself), a
cluster jax detects gets no arguments, and a missing or malformed variable is an error naming it. A fake
`initialize` records its keyword arguments; the real 2-process start-up is tests/train/test_multiprocess_sft.py."""

from __future__ import annotations

import jax
import pytest

from zoomiqa_jax.config import ConfigError
from zoomiqa_jax.parallel import mesh

VARS = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "JAX_LOCAL_DEVICE_IDS",
        "TPU_WORKER_HOSTNAMES", "SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE")


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    for var in VARS:
        monkeypatch.delenv(var, raising=False)
    recorded: list[dict] = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: recorded.append(kw))
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    return recorded


def test_explicit_variables_are_passed_as_arguments(calls, monkeypatch):
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.2:1234")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
    monkeypatch.setenv("JAX_PROCESS_ID", "3")
    assert mesh.initialize_distributed() is True
    assert calls == [{"coordinator_address": "10.0.0.2:1234", "num_processes": 4, "process_id": 3}]
    monkeypatch.setenv("JAX_LOCAL_DEVICE_IDS", "0,1")
    assert mesh.initialize_distributed() is True
    assert calls[-1] == {"coordinator_address": "10.0.0.2:1234", "num_processes": 4, "process_id": 3,
                         "local_device_ids": [0, 1]}


def test_no_multiprocess_environment_initializes_nothing(calls, monkeypatch):
    assert mesh.initialize_distributed() is False
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "localhost")  # a single-host TPU VM
    assert mesh.initialize_distributed() is False
    assert calls == []


def test_already_initialized_is_left_alone(calls, monkeypatch):
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "h:1")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAX_PROCESS_ID", "0")
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: True)
    assert mesh.initialize_distributed() is False and calls == []


@pytest.mark.parametrize("env", [{"TPU_WORKER_HOSTNAMES": "w0,w1,w2,w3"}, {"SLURM_JOB_ID": "77"},
                                 {"OMPI_COMM_WORLD_SIZE": "2"}])
def test_detected_clusters_keep_jax_auto_detection(calls, monkeypatch, env):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert mesh.initialize_distributed() is True
    assert calls == [{}]  # no arguments: jax reads the pod / SLURM / MPI environment itself


def test_explicit_variables_override_a_detected_cluster(calls, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "node0:5555")  # the rest comes from SLURM
    assert mesh.initialize_distributed() is True
    assert calls == [{"coordinator_address": "node0:5555"}]


@pytest.mark.parametrize("env,message", [
    ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2"}, r"JAX_PROCESS_ID not set"),
    ({"JAX_COORDINATOR_ADDRESS": "h:1"}, r"JAX_NUM_PROCESSES, JAX_PROCESS_ID not set"),
    ({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"}, r"JAX_COORDINATOR_ADDRESS not set"),
    ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "two", "JAX_PROCESS_ID": "0"},
     r"JAX_NUM_PROCESSES='two' is not an integer"),
    ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1.0"},
     r"JAX_PROCESS_ID='1.0' is not an integer"),
    ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"},
     r"JAX_PROCESS_ID=2 must be in \[0, JAX_NUM_PROCESSES=2\)"),
    ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "0", "JAX_PROCESS_ID": "0"},
     r"JAX_NUM_PROCESSES=0 must be >= 1"),
    ({"JAX_COORDINATOR_ADDRESS": "host-without-port", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"},
     r"JAX_COORDINATOR_ADDRESS='host-without-port' is not host:port"),
    ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0",
      "JAX_LOCAL_DEVICE_IDS": "0;1"}, r"JAX_LOCAL_DEVICE_IDS='0;1': expected comma-separated integers"),
])
def test_incomplete_or_malformed_environment_names_the_variable(calls, monkeypatch, env, message):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(mesh.DistributedEnvError, match=message) as info:
        mesh.initialize_distributed()
    assert isinstance(info.value, ConfigError)  # `zoomiqa train` exits 2 for it
    assert calls == []  # jax never saw the bad environment
