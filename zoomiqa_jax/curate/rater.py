"""The HACF rater (Zoom-IQA (Liang et al.), Sec. 3.1.1 and supp. 6.3; issue 19): `D_HACF = LLM_Rater(R, I, H)`.

The rater gets the whole rationale R (the `<think>` block of every turn), the image I and the low-level hints
H (`hints.render_hints`, plus the dataset's MOS when the label has one, as the paper's Table 6 shows, and any
label fields named as extra hints, such as KonIQ++'s quality labels), and
answers Pass or Fail; `filters.hacf_decision` reads the verdict. The prompt (`RATER_PROMPT`, our wording) asks
for the verdict first so that a short generation budget suffices.

Raters: `LocalRater` (any checkpoint the engine loads, greedy through `inference.rounds.sample_round`) and
`EndpointRater` (an OpenAI-compatible endpoint, temperature 0). `judge` gives (reply, error) per query: an
endpoint failure is (None, message), never a text the verdict parser could misread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from PIL import Image

from zoomiqa_jax.curate.endpoint import ChatEndpoint, EndpointError
from zoomiqa_jax.inference.rounds import (
    GenerateFn,
    RowPrompt,
    SamplingSettings,
    decode_output,
    encode_images,
    render_prompt,
    sample_round,
)
from zoomiqa_jax.processing.answers import think_block

RATER_PROMPT = """You check image quality assessments for faithfulness. Below are an image, measured low-level \
hints about it and an assessment another model wrote. Decide whether every statement of the assessment about \
the image's quality (sharpness, noise, exposure, colour, compression, and the regions it names) is consistent \
with what the image shows and with the hints. Answer Pass when it is, Fail when any statement is contradicted \
by the image or the hints, or invents something that is not there.

Reply with the single word Pass or Fail first, then at most one sentence why."""


@dataclass(frozen=True)
class RaterQuery:
    """What the rater judges for one candidate."""

    image: Image.Image
    rationale: str
    hints: str


def rationale_of(texts: Sequence[str]) -> str:
    """The rationale R: the `<think>` block of each turn, labelled by round when there are two."""
    blocks = [(think_block(t) or "").strip() for t in texts]
    if len(blocks) == 1:
        return blocks[0]
    return "\n\n".join(f"Round {i}:\n{b}" for i, b in enumerate(blocks, start=1))


def hint_block(hints_text: str, mos: float | None, extra: dict[str, object] | None = None) -> str:
    """The hints H: the rendered low-level hints, the dataset MOS (1-5) when known, then `extra` label fields
    (e.g. KonIQ++'s quality labels, supp. 6.3) as ``- name: value (dataset)``, numbers with 4 decimals."""
    lines = [hints_text]
    if mos is not None:
        lines.append(f"- MOS (human rating, 1-5): {mos:.2f}")
    for name, value in (extra or {}).items():
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        lines.append(f"- {name}: {shown} (dataset)")
    return "\n".join(lines)


def rater_messages(query: RaterQuery, prompt: str = RATER_PROMPT) -> list[dict[str, Any]]:
    """One user turn: instructions, the image, the hints, the rationale, then "Verdict (Pass or Fail):"."""
    return [{"role": "user", "content": [
        {"type": "text", "text": prompt + "\n\nImage: "},
        {"type": "image"},
        {"type": "text", "text": f"\n\n{query.hints}\n\nAssessment:\n{query.rationale}\n\nVerdict (Pass or Fail):"},
    ]}]


class Rater(Protocol):
    """Returns (reply text, None) or (None, error message) per query, in order."""

    def judge(self, queries: Sequence[RaterQuery], indices: Sequence[int]) -> list[tuple[str | None, str | None]]:
        ...


@dataclass
class LocalRater:
    """A checkpoint served by our engine, one greedy round (`settings.temperature` is used as given; the CLI
    passes 0). `indices` seed the rows as in inference; `generate_fn` replaces the sampler (test hook)."""

    model: Any
    tokenizer: Any
    settings: SamplingSettings
    prompt: str = RATER_PROMPT
    generate_fn: GenerateFn | None = None

    def judge(self, queries: Sequence[RaterQuery], indices: Sequence[int]) -> list[tuple[str | None, str | None]]:
        from zoomiqa_jax.inference import engine

        merge = self.model.config.vision.spatial_merge_size
        rows = []
        for query, index in zip(queries, indices):
            images = encode_images([query.image], self.settings, merge)
            ids = render_prompt(self.tokenizer, rater_messages(query, self.prompt), images, merge)
            rows.append(RowPrompt(ids, images, index))
        outs = sample_round(self.model, rows, self.settings, round_index=0,
                            pad_token_id=self.model.config.bos_token_id,
                            generate_fn=self.generate_fn or engine.generate)
        return [(decode_output(self.tokenizer, out.ids), None) for out in outs]


@dataclass
class EndpointRater:
    """An OpenAI-compatible endpoint asked at temperature 0; a failure is (None, "rater endpoint: ...")."""

    endpoint: ChatEndpoint
    prompt: str = RATER_PROMPT

    def judge(self, queries: Sequence[RaterQuery], indices: Sequence[int]) -> list[tuple[str | None, str | None]]:
        replies: list[tuple[str | None, str | None]] = []
        for query in queries:
            try:
                replies.append((self.endpoint.chat(rater_messages(query, self.prompt), [query.image],
                                                   temperature=0.0), None))
            except EndpointError as err:
                replies.append((None, f"rater endpoint: {err}"))
        return replies
