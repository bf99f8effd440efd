"""`zoomiqa train grpo` end to end: SIGKILL mid-run, resume, and the final parameters are bit-identical to an
uninterrupted run (issue 6, must-show 5).

The run uses the VisualQuality-R1 recipe on a random tiny model: its rating parser reads the first number of a
response, so even a random model earns fidelity (rank) rewards that differ within a group, the advantages are
non-zero, and every update depends on the sampled rollouts. The test therefore checks the whole chain (sampler,
sampling keys, rewards, updates, checkpoint) for determinism across a kill."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.train.kill_resume import REPO, assert_same_params, cpu_env, kill_after_checkpoint, saved_params


def _argv(out: Path, steps: int) -> list[str]:
    return [sys.executable, "-m", "zoomiqa_jax.cli", "train", "grpo", "--config", "configs/visualquality_r1_grpo.yaml",
            "model.config=tiny", "model.dtype=float32", "data.max_pixels=3136", "data.batch_size=2",
            "data.synthetic_images=6", "data.synthetic_size=56", "grpo.group_size=4", "grpo.epochs=2",
            "optim.lr=1e-3", "rollout.max_new_tokens=12", "rollout.prompt_buckets=[512]",
            "rollout.new_token_buckets=[16]", f"run.steps={steps}", "checkpoint.save_every=2", "checkpoint.keep=10",
            "run.export_hf=false", f"run.out_dir={out}", "--no-progress"]


@pytest.mark.slow
def test_grpo_sigkill_and_resume_is_bit_identical(tmp_path: Path) -> None:
    steps = 6
    straight = tmp_path / "straight"
    env = cpu_env(compile_cache=tmp_path / "jax_cache")
    subprocess.run(_argv(straight, steps), cwd=REPO, env=env, check=True, capture_output=True)
    lines = [json.loads(s) for s in (straight / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == steps
    assert any(line["grad_norm"] > 0 for line in lines), "no update moved the policy: the test would be vacuous"
    assert any(line["klcov/active_updates"] == 0 for line in lines)  # the first update of every batch: pi_old

    killed = tmp_path / "killed"
    kill_after_checkpoint(_argv(killed, steps), killed, 2, steps, env=env)
    resumed = subprocess.run(_argv(killed, steps), cwd=REPO, env=env, check=True, capture_output=True,
                             text=True)
    assert "resumed from" in resumed.stdout
    assert_same_params(saved_params(straight, steps), saved_params(killed, steps))
