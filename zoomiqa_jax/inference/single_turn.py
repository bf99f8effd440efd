"""Single-turn runs through the same engine: Q-Insight score / degradation / A-B comparison and
VisualQuality-R1 score (issue 3; prompts and parsers in `processing.prompts` / `processing.answers`).

Each input becomes a one-round `Trajectory` (task name in `Trajectory.task`); the mask of its token sequence
is 1 on the generated tokens only. A batch is one sampler call. Ratings are the parsers' numbers as written
(Q-Insight and VisualQuality-R1 do not clip); an unparseable answer is counted under its error class and
excluded, never replaced by a random score (VisualQuality-R1's release draws one; we do not).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from zoomiqa_jax.inference import engine
from zoomiqa_jax.inference.rounds import (
    DEFAULT_SETTINGS,
    GenerateFn,
    ImageItem,
    RowPrompt,
    SamplingSettings,
    decode_output,
    encode_images,
    render_prompt,
    sample_round,
)
from zoomiqa_jax.inference.trajectory import Trajectory, answer_dict, final_sequence, make_round
from zoomiqa_jax.processing.answers import (
    parse_qinsight_comparison,
    parse_qinsight_degradation,
    parse_qinsight_score,
    parse_visualquality_r1,
)
from zoomiqa_jax.processing.prompts import (
    DEFAULT_PROMPTS,
    PromptSet,
    qinsight_compare_messages,
    qinsight_degradation_messages,
    qinsight_score_messages,
    visualquality_r1_messages,
)

# task -> (messages builder, parser); every single-image task has one image placeholder.
SINGLE_IMAGE_TASKS: dict[str, tuple[Callable[[PromptSet], list[dict]], Callable[[str], Any]]] = {
    "qinsight_score": (qinsight_score_messages, parse_qinsight_score),
    "qinsight_degradation": (qinsight_degradation_messages, parse_qinsight_degradation),
    "vqr1_score": (visualquality_r1_messages, parse_visualquality_r1),
}
COMPARE_TASK = "qinsight_compare"


def run_single_turn(
    model: Any,
    tokenizer: Any,
    items: Sequence[ImageItem],
    task: str,
    settings: SamplingSettings = DEFAULT_SETTINGS,
    *,
    prompts: PromptSet = DEFAULT_PROMPTS,
    generate_fn: GenerateFn | None = None,
) -> list[Trajectory]:
    """Run one of SINGLE_IMAGE_TASKS on a batch of images; one Trajectory per item, in order."""
    if task not in SINGLE_IMAGE_TASKS:
        raise ValueError(f"task: expected one of {sorted(SINGLE_IMAGE_TASKS)}, found {task!r}")
    build, parse = SINGLE_IMAGE_TASKS[task]
    jobs = [(item, [item.image], {}) for item in items]
    return _run(model, tokenizer, jobs, task, build(prompts), parse, settings, generate_fn)


def run_comparisons(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[tuple[ImageItem | None, ImageItem, ImageItem]],
    settings: SamplingSettings = DEFAULT_SETTINGS,
    *,
    prompts: PromptSet = DEFAULT_PROMPTS,
    generate_fn: GenerateFn | None = None,
) -> list[Trajectory]:
    """Q-Insight A/B comparisons, each (reference or None, A, B); `final_answer["choice"]` is "A" or "B".

    All pairs of one call must agree on having a reference (one prompt per batch); the trajectory's
    `image` is A's name and `inputs` names every image.
    """
    if not pairs:
        return []
    with_ref = {ref is not None for ref, _, _ in pairs}
    if len(with_ref) != 1:
        raise ValueError("run_comparisons: every pair of one call must have a reference, or none may")
    messages = qinsight_compare_messages(with_ref.pop(), prompts)
    jobs = []
    for ref, a, b in pairs:
        named = ([("reference", ref)] if ref is not None else []) + [("A", a), ("B", b)]
        jobs.append((a, [item.image for _, item in named], {k: item.name for k, item in named}))
    return _run(model, tokenizer, jobs, COMPARE_TASK, messages, parse_qinsight_comparison, settings, generate_fn)


def _run(
    model: Any,
    tokenizer: Any,
    jobs: Sequence[tuple[ImageItem, list, dict[str, str]]],
    task: str,
    messages: list[dict],
    parse: Callable[[str], Any],
    settings: SamplingSettings,
    generate_fn: GenerateFn | None,
) -> list[Trajectory]:
    merge = model.config.vision.spatial_merge_size
    trajs, rows, live = [], [], []
    for item, images, names in jobs:
        traj = Trajectory(image=item.name, task=task, image_size=list(item.image.size), inputs=names)
        trajs.append(traj)
        try:
            encoded = encode_images(images, settings, merge)
        except ValueError as err:
            traj.invalid, traj.invalid_round = "image_error", 0
            traj.routing_warnings.append(f"image_error: {item.name}: {err}")
            continue
        rows.append(RowPrompt(render_prompt(tokenizer, messages, encoded, merge), encoded, item.index))
        live.append(traj)
    outs = sample_round(model, rows, settings, round_index=0, pad_token_id=model.config.bos_token_id,
                        generate_fn=generate_fn or engine.generate)
    for traj, row, out in zip(live, rows, outs):
        answer = parse(decode_output(tokenizer, out.ids))
        rnd = make_round(tokenizer, 1, row.ids, out, answer, row.images)
        traj.rounds.append(rnd)
        traj.final_answer = answer_dict(answer)
        if answer.error is not None:
            traj.invalid, traj.invalid_round = answer.error, 1
        traj.rating = getattr(answer, "rating", None)
        traj.hit_token_limit = out.hit_token_limit
        traj.token_ids, traj.token_mask, traj.token_logprobs = final_sequence(
            rnd.prompt_ids, None, None, rnd.output_ids, rnd.output_logprobs
        )
    return trajs
