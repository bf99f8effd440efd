"""Q-Insight rewards (arXiv:2503.22679 Sec. 3.3, Eqs. 3-6) as its published training code defines them.

    r = r_fmt + 1_scr r_scr + 1_deg (alpha_1 r_deg + alpha_2 r_lev),  alpha_1 = 0.25, alpha_2 = 0.75  (Eq. 6)

This module is the reward arithmetic only. How a response is read (the format pattern, the rating and the
degradation fields) lives in `zoomiqa_jax.processing.answers`, the one Q-Insight parser of the project, whose
defaults are the upstream semantics:

* r_fmt: 1 when `check_qinsight_format` accepts the WHOLE response (`<think>` NL ... NL `</think>` NL
  `<answer>` NL `{...}` NL `</answer>`, no inner braces), else 0.
* r_scr (Eq. 3): 1 when |rating - MOS| < epsilon = 0.35, else 0, with the rating read by `parse_qinsight_score`
  in its strict (default) mode: an unquoted JSON number in the first answer block (`"rating": "3.5"` scores 0).
* r_deg, r_lev (Eqs. 4-5): from `parse_qinsight_degradation`, compared case-sensitively with the labels:
  0.25 for the right class, 0.75 more when the severity also matches; a right severity with a wrong class
  earns nothing.

The score and degradation rewards do not require the format to be right (upstream computes them independently
and sums). No function here raises on model output: a malformed response scores 0 on what it breaks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from zoomiqa_jax.processing.answers import (
    check_qinsight_format,
    parse_qinsight_degradation,
    parse_qinsight_score,
)

SCORE_THRESHOLD = 0.35  # epsilon of Eq. 3 (Sec. 4.1)
DEG_CLASS_WEIGHT = 0.25  # alpha_1 of Eq. 6
DEG_LEVEL_WEIGHT = 0.75  # alpha_2 of Eq. 6
TASK_SCORE = "score"
TASK_DEGRADATION = "degradation"
_TASK_ALIASES = {"score": TASK_SCORE, "degradation": TASK_DEGRADATION, "dist": TASK_DEGRADATION}


class QInsightRewards(NamedTuple):
    """The reward of every response and its parts, each `[batch, group]` float64."""

    format: np.ndarray
    task: np.ndarray
    total: np.ndarray


def qinsight_format_reward(text: str) -> float:
    """r_fmt: 1.0 when `check_qinsight_format(text)`, else 0.0."""
    return 1.0 if check_qinsight_format(text) else 0.0


def qinsight_score_reward(text: str, mos: float, threshold: float = SCORE_THRESHOLD) -> float:
    """r_scr, Eq. 3: 1.0 if |rating - MOS| < threshold (0.35), else 0.0 (also for a missing or invalid rating)."""
    rating = parse_qinsight_score(text, strict=True).rating
    if rating is None:
        return 0.0
    return 1.0 if abs(rating - float(mos)) < threshold else 0.0


def qinsight_degradation_reward(text: str, distortion_class: str, severity: str) -> float:
    """alpha_1 r_deg + alpha_2 r_lev, Eqs. 4-6: 0.25 for the right class, 0.75 more if severity matches."""
    parsed = parse_qinsight_degradation(text)
    if parsed.error is not None or parsed.distortion_class != distortion_class:
        return 0.0
    return DEG_CLASS_WEIGHT + (DEG_LEVEL_WEIGHT if parsed.severity == severity else 0.0)


def _task_reward(text: str, task: str, solution: Any, threshold: float) -> float:
    if task == TASK_SCORE:
        return qinsight_score_reward(text, float(solution), threshold)
    return qinsight_degradation_reward(text, solution["distortion_class"], solution["severity"])


def qinsight_rewards(
    responses: Sequence[Sequence[str]],
    tasks: Sequence[str],
    solutions: Sequence[float | Mapping[str, str]],
    *,
    threshold: float = SCORE_THRESHOLD,
) -> QInsightRewards:
    """Q-Insight reward of every response, Eq. 6: format reward plus the task's reward.

    responses: `[batch][group]` decoded response texts; tasks: `[batch]`, "score" or "degradation" (upstream's
    "dist" is accepted too); solutions: `[batch]`, the MOS (a float) for a score task, a mapping with
    "distortion_class" and "severity" for a degradation task. Returns `[batch, group]` arrays.
    A bad task name or solution raises (they come from our data); a bad response never does.
    """
    if not (len(responses) == len(tasks) == len(solutions)):
        raise ValueError(
            f"qinsight_rewards: responses, tasks and solutions must have one entry per prompt, found "
            f"{len(responses)}, {len(tasks)} and {len(solutions)}"
        )
    group = {len(r) for r in responses}
    if len(group) > 1:
        raise ValueError(
            f"qinsight_rewards: every prompt needs the same number of responses, found {sorted(group)}"
        )
    n_group = group.pop() if group else 0
    fmt = np.zeros((len(responses), n_group))
    task_r = np.zeros((len(responses), n_group))
    for b, (texts, task, solution) in enumerate(zip(responses, tasks, solutions)):
        canonical = _TASK_ALIASES.get(task)
        if canonical is None:
            raise ValueError(
                f"qinsight_rewards: prompt {b} has task {task!r}, expected one of {sorted(_TASK_ALIASES)}"
            )
        if canonical == TASK_DEGRADATION and not (
            isinstance(solution, Mapping) and "distortion_class" in solution and "severity" in solution
        ):
            raise ValueError(
                f"qinsight_rewards: prompt {b} is a degradation task, expected a solution with "
                f"'distortion_class' and 'severity', found {solution!r}"
            )
        for g, text in enumerate(texts):
            fmt[b, g] = qinsight_format_reward(text)
            task_r[b, g] = _task_reward(text, canonical, solution, threshold)
    return QInsightRewards(format=fmt, task=task_r, total=fmt + task_r)
