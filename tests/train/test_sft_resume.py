"""`zoomiqa train sft` end to end: SIGKILL, SIGTERM and SIGINT mid-run, resume after each, and the final parameters
are bit-identical to an uninterrupted run of the same length (issue 5, must-show 2; issue 13, must-show 2). On the
way: a stale unfinished save is removed, a resume with another `run.steps` is refused (exit 2) and, with
--allow-config-change, accepted. Also the data stream's determinism."""

from __future__ import annotations

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
from zoomiqa_jax.data.trajectories import build_demo_set

SHORT_PROMPTS = """zoomiqa_stage1: |-
  {question}
  Rate the image from 1.00 to 5.00: four labelled paragraphs in <think>, then the JSON answer.
zoomiqa_stage2: |-
  The original and the crop follow. Four labelled paragraphs, then the final JSON answer.
"""


@pytest.fixture(scope="module")
def sft_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sft_resume")
    build_demo_set(root / "set", 6, seed=3, crop_fraction=0.0, image_size=56)
    (root / "prompts.yaml").write_text(SHORT_PROMPTS)
    return root


def _argv(data: Path, out: Path, steps: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "zoomiqa_jax.cli", "train", "sft", "--config", "configs/sft_tiny.yaml",
            f"data.train={data / 'set' / 'trajectories.jsonl'}", f"data.prompt_file={data / 'prompts.yaml'}",
            "data.batch_size=2", "data.seq_buckets=[512,1024]", f"run.steps={steps}", "run.log_every=1",
            "checkpoint.save_every=2", "checkpoint.keep=10", "run.export_hf=false", f"run.out_dir={out}",
            "--no-progress", *extra]


@pytest.mark.slow
def test_sigkill_sigterm_sigint_and_resume_is_bit_identical(sft_data: Path, tmp_path: Path) -> None:
    steps = 10
    straight = tmp_path / "straight"
    env = cpu_env(compile_cache=tmp_path / "jax_cache")
    subprocess.run(_argv(sft_data, straight, steps), cwd=REPO, env=env, check=True, capture_output=True)

    run = tmp_path / "interrupted"
    kill_after_checkpoint(_argv(sft_data, run, steps), run, 2, steps, env=env)
    stale = run / "checkpoints" / "8.orbax-checkpoint-tmp"  # as a SIGKILL in the middle of a save leaves it
    (stale / "params.orbax-checkpoint-tmp").mkdir(parents=True)
    # resumed from step 2, then SIGTERM (a preempted VM) once it trains: the step finishes, a checkpoint, exit 0
    stopped, text = stop_with_signal(_argv(sft_data, run, steps), run, signal.SIGTERM, 2, steps, env=env)
    assert "resumed from" in text and "removing an unfinished checkpoint save" in text and not stale.exists()

    refused = subprocess.run(_argv(sft_data, run, 12), cwd=REPO, env=env, capture_output=True, text=True)
    assert refused.returncode == 2 and "run.steps 10 -> 12" in refused.stderr, refused.stderr[-2000:]

    # resumed again, then SIGINT (Ctrl-C), then resumed to the end
    stop_with_signal(_argv(sft_data, run, steps), run, signal.SIGINT, stopped, steps, env=env)
    resumed = subprocess.run(_argv(sft_data, run, steps), cwd=REPO, env=env, check=True,
                             capture_output=True, text=True)
    assert "resumed from" in resumed.stdout
    assert_same_params(saved_params(straight, steps), saved_params(run, steps))

    longer = subprocess.run(_argv(sft_data, run, steps + 1, "--allow-config-change"), cwd=REPO, env=env,
                            capture_output=True, text=True)
    assert longer.returncode == 0, longer.stderr[-2000:]
    assert "--allow-config-change: resuming step 10 with changed key(s) ['run.steps']" in longer.stdout
    assert (run / "checkpoints" / str(steps + 1)).is_dir()


def test_stream_is_a_pure_function_of_the_position(sft_data: Path) -> None:
    from zoomiqa_jax.processing.prompts import load_prompt_file
    from zoomiqa_jax.processing.tokenizer import TINY_TOKENIZER_DIR, load_tokenizer
    from zoomiqa_jax.train.sft_data import load_sft_jsonl
    from zoomiqa_jax.train.sft_loop import SFTStream

    records = load_sft_jsonl(sft_data / "set" / "trajectories.jsonl").records
    tok = load_tokenizer(TINY_TOKENIZER_DIR)
    prompts = load_prompt_file(sft_data / "prompts.yaml")
    kw = dict(batch_size=4, seed=1, per_round=True, prompts=prompts, max_pixels=56 * 56, seq_buckets=(512, 1024))
    s1, s2 = SFTStream(records, tok, **kw), SFTStream(records, tok, **kw)
    ks = [0, 1, 5, 2, 9, 3]
    first = [s1.positions(k) for k in ks]
    assert [s2.positions(k) for k in reversed(ks)] == list(reversed(first))
    per_epoch = s1.batches_per_epoch
    seen = sorted(i for k in range(per_epoch) for i in s1.positions(k))
    assert set(seen) == set(range(len(s1)))  # every example once per epoch (plus top-ups)
    assert s1.positions(0) != s1.positions(per_epoch) or len(s1) <= 4  # a new permutation each epoch
    for k in range(per_epoch):
        buckets = {int(s1.bucket_of[i]) for i in s1.positions(k)}
        assert len(buckets) == 1  # grouped by length
