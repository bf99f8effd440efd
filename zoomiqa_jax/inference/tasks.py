"""One entry point for every inference task, called by `zoomiqa score`, `zoomiqa eval` and GRPO rollouts.

    trajs = run_task(model, tokenizer, items, "zoomiqa", settings, prompts=prompts, protocol=protocol)

"zoomiqa" runs the two-round crop-and-zoom protocol (`inference.zoom.run_zoomiqa`, up to `max_turns`
rounds, the `protocol`'s prompts, parsing, routing and crop geometry: `strict` over `prompts` when none is
given); every other task (`inference.single_turn.SINGLE_IMAGE_TASKS`: Q-Insight score / degradation,
VisualQuality-R1) one turn (`run_single_turn`). `generate_fn` replaces the engine's sampler (eval's data-parallel
runner); `stage1_generate_fn` the first round's only (GRPO's group sampler, `train.rollout.group_stage1_generate`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from zoomiqa_jax.inference import single_turn, zoom  # looked up at call time (tests wrap run_zoomiqa)
from zoomiqa_jax.inference.protocol import Protocol
from zoomiqa_jax.inference.rounds import GenerateFn, ImageItem, SamplingSettings
from zoomiqa_jax.inference.trajectory import Trajectory
from zoomiqa_jax.inference.zoom import MAX_TURNS
from zoomiqa_jax.processing.prompts import DEFAULT_PROMPTS, PromptSet


def run_task(
    model: Any,
    tokenizer: Any,
    items: Sequence[ImageItem],
    task: str,
    settings: SamplingSettings,
    *,
    prompts: PromptSet | None = None,
    protocol: Protocol | None = None,
    max_turns: int = MAX_TURNS,
    generate_fn: GenerateFn | None = None,
    stage1_generate_fn: GenerateFn | None = None,
) -> list[Trajectory]:
    """The trajectories of `items` under `task` (module docstring), one per item, in order."""
    if task == "zoomiqa":
        return zoom.run_zoomiqa(model, tokenizer, items, settings, max_turns=max_turns,
                                prompts=prompts or DEFAULT_PROMPTS, generate_fn=generate_fn,
                                stage1_generate_fn=stage1_generate_fn, protocol=protocol)
    if stage1_generate_fn is not None and generate_fn is None:
        generate_fn = stage1_generate_fn  # a single-turn task has only a first round
    return single_turn.run_single_turn(model, tokenizer, items, task, settings,
                                       prompts=prompts or DEFAULT_PROMPTS, generate_fn=generate_fn)
