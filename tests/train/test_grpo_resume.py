"""`zoomiqa train grpo` end to end: SIGKILL, SIGTERM and SIGINT mid-run, resume after each, and the final parameters
are bit-identical to an uninterrupted run (issue 6, must-show 5; issue 13, must-show 2); a resume with another
`run.steps` is refused (exit 2).

The run uses the VisualQuality-R1 recipe on a random tiny model: its rating parser reads the first number of a
response, so even a random model earns fidelity (rank) rewards that differ within a group, the advantages are
non-zero, and every update depends on the sampled rollouts. The test therefore checks the whole chain (sampler,
sampling keys, rewards, updates, checkpoint) for determinism across a kill."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.train.kill_resume import (
    REPO,
    assert_same_params,
    cpu_env,
    kill_after_checkpoint,
    saved_params,
    stop_with_signal,
)


def _argv(out: Path, steps: int) -> list[str]:
    return [sys.executable, "-m", "zoomiqa_jax.cli", "train", "grpo", "--config", "configs/visualquality_r1_grpo.yaml",
            "model.config=tiny", "model.dtype=float32", "data.max_pixels=3136", "data.batch_size=2",
            "data.synthetic_images=6", "data.synthetic_size=56", "grpo.group_size=4", "grpo.epochs=2",
            "optim.lr=1e-3", "rollout.max_new_tokens=12", "rollout.prompt_buckets=[512]",
            "rollout.new_token_buckets=[16]", f"run.steps={steps}", "checkpoint.save_every=1", "checkpoint.keep=10",
            "run.export_hf=false", f"run.out_dir={out}", "--no-progress"]


@pytest.mark.slow
def test_grpo_sigkill_sigterm_sigint_and_resume_is_bit_identical(tmp_path: Path) -> None:
    steps = 6  # a checkpoint every step leaves room for a kill and two stops (steps 7-8 would compile a new shape)
    straight = tmp_path / "straight"
    env = cpu_env(compile_cache=tmp_path / "jax_cache")
    subprocess.run(_argv(straight, steps), cwd=REPO, env=env, check=True, capture_output=True)
    lines = [json.loads(s) for s in (straight / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == steps
    assert any(line["grad_norm"] > 0 for line in lines), "no update moved the policy: the test would be vacuous"
    assert any(line["klcov/active_updates"] == 0 for line in lines)  # the first update of every batch: pi_old

    killed = tmp_path / "killed"
    kill_after_checkpoint(_argv(killed, steps), killed, 1, steps, env=env)
    # resumed from step 1, SIGTERM (a preempted VM) once it trains: the step finishes, a checkpoint, exit 0
    stopped, text = stop_with_signal(_argv(killed, steps), killed, signal.SIGTERM, 1, steps, env=env)
    assert "resumed from" in text
    refused = subprocess.run(_argv(killed, steps + 2), cwd=REPO, env=env, capture_output=True, text=True)
    assert refused.returncode == 2 and f"run.steps {steps} -> {steps + 2}" in refused.stderr, refused.stderr[-2000:]
    stop_with_signal(_argv(killed, steps), killed, signal.SIGINT, stopped, steps, env=env)  # Ctrl-C
    resumed = subprocess.run(_argv(killed, steps), cwd=REPO, env=env, check=True, capture_output=True,
                             text=True)
    assert "resumed from" in resumed.stdout
    assert_same_params(saved_params(straight, steps), saved_params(killed, steps))
