"""`zoomiqa train grpo` end to end: SIGKILL mid-run, resume, and the final parameters are bit-identical to an
uninterrupted run (issue 6, must-show 5).

The run uses the VisualQuality-R1 recipe on a random tiny model: its rating parser reads the first number of a
response, so even a random model earns fidelity (rank) rewards that differ within a group, the advantages are
non-zero, and every update depends on the sampled rollouts. The test therefore checks the whole chain (sampler,
sampling keys, rewards, updates, checkpoint) for determinism across a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


def _argv(out: Path, steps: int) -> list[str]:
    return [sys.executable, "-m", "zoomiqa_jax.cli", "train", "grpo", "--config", "configs/visualquality_r1_grpo.yaml",
            "model.config=tiny", "model.dtype=float32", "data.max_pixels=3136", "data.batch_size=2",
            "data.synthetic_images=6", "data.synthetic_size=56", "grpo.group_size=4", "grpo.epochs=2",
            "optim.lr=1e-3", "rollout.max_new_tokens=12", "rollout.prompt_buckets=[512]",
            "rollout.new_token_buckets=[16]", f"run.steps={steps}", "checkpoint.save_every=2", "checkpoint.keep=10",
            "run.export_hf=false", f"run.out_dir={out}", "--no-progress"]


def _env() -> dict[str, str]:
    return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO),
                XLA_FLAGS="--xla_force_host_platform_device_count=1")


def _params(out: Path, step: int) -> dict[str, np.ndarray]:
    import jax
    from flax import nnx

    from zoomiqa_jax.checkpoint.orbax_io import load_orbax

    model, _ = load_orbax(out / "checkpoints", step=step)
    leaves = jax.tree_util.tree_flatten_with_path(nnx.state(model, nnx.Param))[0]
    return {jax.tree_util.keystr(path): np.asarray(v) for path, v in leaves}


@pytest.mark.slow
def test_grpo_sigkill_and_resume_is_bit_identical(tmp_path: Path) -> None:
    steps = 6
    straight = tmp_path / "straight"
    subprocess.run(_argv(straight, steps), cwd=REPO, env=_env(), check=True, capture_output=True)
    lines = [json.loads(s) for s in (straight / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == steps
    assert any(line["grad_norm"] > 0 for line in lines), "no update moved the policy: the test would be vacuous"
    assert any(line["klcov/active_updates"] == 0 for line in lines)  # the first update of every batch: pi_old

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_argv(killed, steps), cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    try:
        while not (killed / "checkpoints" / "2").is_dir():
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.time() < deadline, "no checkpoint within 10 minutes"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    saved = sorted(int(p.name) for p in (killed / "checkpoints").iterdir() if p.name.isdigit())
    assert steps not in saved, f"the run was not killed mid-run: saved steps {saved}"

    resumed = subprocess.run(_argv(killed, steps), cwd=REPO, env=_env(), check=True, capture_output=True, text=True)
    assert "resumed from" in resumed.stdout

    a, b = _params(straight, steps), _params(killed, steps)
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key], b[key]), f"{key} differs after resume"
