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


# ---- the parser fuzz corpus: answer payloads x the ways a reply holds them (issue 18 item 7 cases included) ----
PAYLOADS = (
    '{"bbox_2d": [0, 0, 0, 0], "rating": 2.75, "tool": "final"}',
    '{"bbox_2d": [0.1, 0.2, 0.5, 0.6], "rating": 3.25, "tool": "crop"}',
    '{"bbox_2d": [0, 0, 0, 0], "rating": 4.5, "tool": "crop"}',
    '{"bbox_2d": ["0", "0", "0", "0"], "rating": 3.0, "tool": "crop"}',
    '{"bbox_2d": [0.1, 0.2, 0.5, 0.6], "rating": 3.0, "tool": "Final"}',
    '{"bbox_2d": [0, 0, 0, 0], "rating": true, "tool": "final"}',
    '{"bbox_2d": [0, 0, 0, 0], "rating": "1_0", "tool": "final"}',
    '{"bbox_2d": [0, 0, 0, 0], "rating": " 3.5 ", "tool": "final"}',
    '{"bbox_2d": [0, 0, 0, 0], "rating": -2, "tool": "final"}',
    '{"bbox_2d": [0, 0, 0, 0], "rating": 7.5, "tool": "final"}',
    '{"bbox_2d": [0, 0, 0, 0], "rating": "3,5", "tool": "final"}',
    '{"bbox_2d": [0, 0, 0, 0], "rating": null, "tool": "final"}',
    '{"bbox_2d": [0, 0, 0, 0], "rating": [3], "tool": "final"}',
    '{"bbox_2d": [0, 0, 0, 0], "rating": NaN, "tool": "final"}',
    '{"bbox_2d": [0, 0, 0, 0], "rating": 1e999, "tool": "final"}',
    '{"bbox_2d": [0, 0, 0, 0], "rating": 1' + "0" * 400 + ', "tool": "final"}',
    '{"bbox_2d": [0.1, 0.2, 0.5, 0.6], "tool": "crop"}',
    '{"rating": 3.0, "tool": "crop"}',
    '{"bbox_2d": [0.1, 0.2, 0.5, 0.6], "rating": 3.0}',
    '{"bbox_2d": 7, "rating": 3.0, "tool": "crop"}',
    "{'bbox_2d': [0, 0, 0, 0], 'rating': 4.25, 'tool': 'final'}",
    '{bbox_2d: [0, 0, 0, 0,], rating: 1.75, tool: "final",}',
    '{"bbox_2d": [0, 0, 0, 0], // no crop\n "rating": 2.5, "tool": "final"}',
    '{"bbox_2d": [0, 0, 0, 0], /* no crop */ "rating": 2.5, "tool": "final"}',
    "{\u201cbbox_2d\u201d: [0, 0, 0, 0], \u201crating\u201d: 3.0, \u201ctool\u201d: \u201cfinal\u201d}",
    '{"bbox_2d": [0, 0, 0, 0], "rating": 3.0, "tool": \u201cfinal\u201d}',
    "{not json}",
    "{}",
    "3.5",
)
SECOND = '{"bbox_2d": [0, 0, 0, 0], "rating": 4.75, "tool": "final"}'
HOLDERS = {
    "plain": lambda sections, p: reply(sections, p),
    "prose_before": lambda sections, p: reply(sections, "Rating: " + p),
    "prose_after": lambda sections, p: reply(sections, p + " That is all."),
    "code_fence": lambda sections, p: reply(sections, "```json\n" + p + "\n```"),
    "two_blocks": lambda sections, p: reply(sections, p) + f"\n<answer>{SECOND}</answer>",
    "prose_then_block": lambda sections, p: reply(sections, "see " + p) + f"<answer>{SECOND}</answer>",
    "unclosed": lambda sections, p: reply(sections, p)[: -len("</answer>")],
}


def corpus(sections=STAGE1_SECTIONS) -> list[tuple[str, str]]:
    """(name, reply) for every payload in every holder: the parser fuzz corpus of the protocol tests."""
    return [(f"{holder}/{i}", make(sections, payload)) for holder, make in HOLDERS.items()
            for i, payload in enumerate(PAYLOADS)]
