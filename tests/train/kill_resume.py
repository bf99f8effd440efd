"""Shared by the resume tests: run a training command, kill it (SIGKILL) once a checkpoint step is committed or
stop it (SIGINT / SIGTERM) once it has logged a step, read the parameters a run saved."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def cpu_env(compile_cache: Path | None = None) -> dict[str, str]:
    """The environment of a training subprocess: CPU, one device, this checkout importable. With `compile_cache`,
    JAX's persistent compilation cache in that folder, every program cached: the straight, the killed and the
    resumed run of a test then compile each program once between them (the compiled programs are the same either
    way; the cache only saves the recompiling)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO),
               XLA_FLAGS="--xla_force_host_platform_device_count=1")
    if compile_cache is not None:
        env |= {"JAX_COMPILATION_CACHE_DIR": str(compile_cache), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    return env


def kill_after_checkpoint(argv: list[str], out: Path, step: int, final_step: int, timeout: float = 600,
                          env: dict[str, str] | None = None) -> None:
    """Start `argv` (in `env`, default `cpu_env()`), SIGKILL it as soon as `out/checkpoints/<step>` exists (a
    committed step directory appears atomically), and check that it died mid-run (the final step was never saved)."""
    proc = subprocess.Popen(argv, cwd=REPO, env=env or cpu_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    try:
        while not (out / "checkpoints" / str(step)).is_dir():
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.time() < deadline, f"no checkpoint within {timeout} s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    saved = sorted(int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit())
    assert final_step not in saved, f"the run was not killed mid-run: saved steps {saved}"


def _logged_steps(out: Path, offset: int = 0) -> list[int]:
    """Steps of the metric lines (not events) in out/metrics.jsonl after byte `offset`, complete lines only."""
    path = out / "metrics.jsonl"
    if not path.exists():
        return []
    lines = path.read_bytes()[offset:].decode().split("\n")[:-1]
    return [row["step"] for row in map(json.loads, lines) if "event" not in row]


def stop_with_signal(argv: list[str], out: Path, signum: int, after_step: int, final_step: int,
                     env: dict[str, str] | None = None, timeout: float = 600) -> tuple[int, str]:
    """Start `argv`, send `signum` as soon as it adds a line for a step > `after_step` to out/metrics.jsonl (the run
    is training), and check the graceful stop: exit status 0, the "Stopped at step N (SIGNAME)" line naming the
    resume command, checkpoint N committed, N before `final_step`. Returns (N, the run's stdout)."""
    log = out.parent / f"{out.name}.{signal.Signals(signum).name}.log"
    out.mkdir(parents=True, exist_ok=True)
    metrics = out / "metrics.jsonl"
    offset = metrics.stat().st_size if metrics.exists() else 0  # lines of earlier runs do not count
    with open(log, "w") as stdout:
        proc = subprocess.Popen(argv, cwd=REPO, env=env or cpu_env(), stdout=stdout, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        try:
            while not any(s > after_step for s in _logged_steps(out, offset)):
                assert proc.poll() is None, f"the run ended before it could be stopped:\n{log.read_text()[-3000:]}"
                assert time.time() < deadline, f"no step logged within {timeout} s"
                time.sleep(0.05)
            proc.send_signal(signum)
            proc.wait(timeout=timeout)
        finally:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert proc.returncode == 0, f"rc {proc.returncode}:\n{text[-3000:]}"
    name = signal.Signals(signum).name
    found = re.search(rf"Stopped at step (\d+) \({name}\); checkpoint saved\. Resume with the same command: "
                      r"zoomiqa train ", text)
    assert found, text[-3000:]
    step = int(found.group(1))
    assert after_step < step < final_step, f"stopped at {step}, not mid-run"
    assert (out / "checkpoints" / str(step)).is_dir(), f"no checkpoint at the stop step {step}"
    return step, text


def saved_params(out: Path, step: int) -> dict[str, np.ndarray]:
    """Every parameter of the run's checkpoint at `step`, by path."""
    import jax
    from flax import nnx

    from zoomiqa_jax.checkpoint.orbax_io import load_orbax

    model, _ = load_orbax(out / "checkpoints", step=step)
    leaves = jax.tree_util.tree_flatten_with_path(nnx.state(model, nnx.Param))[0]
    return {jax.tree_util.keystr(path): np.asarray(v) for path, v in leaves}


def assert_same_params(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key], b[key]), f"{key} differs after resume"
