"""Hand-written Zoom-IQA replies shared by the inference and rollout tests: four labelled sections and an answer."""

from __future__ import annotations

from zoomiqa_jax.processing.answers import STAGE1_SECTIONS, STAGE2_SECTIONS


def reply(sections, payload):
    body = "\n".join(f"{i + 1}) {label}: the sky is {i} noisy." for i, label in enumerate(sections))
    return f"<think>\n{body}\n</think>\n<answer>{payload}</answer>"


CROP = reply(STAGE1_SECTIONS, '{"bbox_2d": [0.1, 0.1, 0.5, 0.6], "rating": 3.25, "tool": "crop"}')
FINAL = reply(STAGE1_SECTIONS, '{"bbox_2d": [0, 0, 0, 0], "rating": 2.75, "tool": "final"}')
ZERO_BOX = reply(STAGE1_SECTIONS, '{"bbox_2d": [0, 0, 0, 0], "rating": 4.5, "tool": "crop"}')
STAGE2 = reply(STAGE2_SECTIONS, '{"bbox_2d": [0, 0, 0, 0], "rating": 1.5, "tool": "final"}')
