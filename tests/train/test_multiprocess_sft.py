"""Two local processes (gloo CPU collectives, 2 simulated devices each) start `zoomiqa train sft` on synthetic data
from the JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID environment alone, as a SLURM template or
launcher sets it, and train two steps (issue 15): the start-up passes all three to jax.distributed (jax 0.10 reads
only the first: "Number of processes must be defined."), and process 1 waits at a barrier until process 0 has
written the synthetic set (it used to read it at once: FileNotFoundError, then process 0 hung in a gloo timeout)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.train.kill_resume import REPO, cpu_env


@pytest.mark.slow
def test_two_processes_start_sft_on_synthetic_data_from_the_environment(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    out = tmp_path / "run"  # one out_dir on the disk both processes share
    argv = [sys.executable, "-m", "zoomiqa_jax.cli", "train", "sft", "--config", "configs/sft_tiny.yaml",
            "data.train=", "data.synthetic_images=4", "data.synthetic_size=56", "data.batch_size=4",
            "optim.grad_accum=1", "run.steps=2", "run.log_every=1", "run.export_hf=false", f"run.out_dir={out}",
            "--no-progress"]
    procs = []
    for pid in range(2):
        env = cpu_env() | {"XLA_FLAGS": "--xla_force_host_platform_device_count=2",
                           "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo",
                           "JAX_COORDINATOR_ADDRESS": f"localhost:{port}", "JAX_NUM_PROCESSES": "2",
                           "JAX_PROCESS_ID": str(pid)}
        procs.append(subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    results = []
    for p in procs:
        try:
            results.append(p.communicate(timeout=420))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    for pid, (p, (stdout, stderr)) in enumerate(zip(procs, results)):
        assert p.returncode == 0, f"process {pid}: {stderr[-3000:]}"
        assert "done: step 2" in stdout
    assert "mesh {'data': 4, 'fsdp': 1, 'tensor': 1}" in results[0][0]  # 2 processes x 2 devices, one mesh
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]  # written once (process 0), every step
    assert (out / "checkpoints" / "2").is_dir()
