"""The record of one scored image: every round's text, answer, boxes and tokens, and the RL token sequence.

A `Trajectory` is what inference returns and what GRPO consumes. It serializes to plain JSON
(`to_dict` / `from_dict`).

Token sequence and mask (for the RL loss)
-----------------------------------------
Each `Round` keeps the exact prompt ids the model was fed, the ids it generated (stop token included) and
their log-probs at sampling time (`log_softmax` of the unfiltered logits at temperature 1, the engine's
convention). These per-round records are what a clipped-ratio loss should recompute: each round's tokens
under that round's own prompt.

`Trajectory.token_ids` is the final multi-turn sequence: the last round's prompt followed by its generated
tokens. `token_mask` is 1 exactly on tokens the model generated: the last round's output and, for a crop
trajectory, the stage-1 reply that sits in the stage-2 history. Everything else (system and user turns, chat
scaffolding such as `<|im_start|>assistant\\n`, the image tokens of the original and of the crop) is 0.
`token_logprobs` holds the sampling-time log-prob where the mask is 1 and 0 elsewhere.

The stage-2 history is built by SPLICING the stage-1 token ids into the rendered template
(`splice_assistant_turn`), not by re-tokenizing the stage-1 text, so the mask marks the very tokens that
were sampled. When those ids are the canonical tokenization of their text (always, for a model that writes
normal text) the spliced prompt equals the published protocol's rendering of the stage-2 messages token for
token. Two details: the `<|im_end|>` that closes the stage-1 turn is model-generated (mask 1) when stage 1
stopped on it, and template scaffolding (mask 0) when stage 1 stopped on another stop token or ran out of
tokens; special tokens inside the stage-1 reply (which the published protocol drops by decoding with
`skip_special_tokens`) are left out of the history and a routing warning says so. Note that in the stage-2
history the stage-1 tokens sit in a context WITHOUT the stage-1 image (the published protocol), so their
log-probs in the final sequence differ from their sampling-time ones; `token_logprobs` keeps the latter.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from zoomiqa_jax.inference.rounds import EncodedImages, RowOutput, decode_output, prompt_text
from zoomiqa_jax.processing.answers import extract_restoration_prompts
from zoomiqa_jax.processing.image import num_image_tokens
from zoomiqa_jax.processing.tokenizer import IMAGE_PAD

# Replaced by the stage-1 token ids when the stage-2 history is rendered (NUL bytes never occur in a reply).
SPLICE_MARK = "\x00zoomiqa-splice\x00"
_TOKEN_FIELDS = ("prompt_ids", "output_ids", "output_logprobs")


@dataclass
class Round:
    """One model turn. `index` is 1 for stage 1 and 2 for the crop inspection.

    Boxes: `bbox_requested` is the box as the answer wrote it (normalized in the Zoom-IQA protocol);
    `bbox_pixels` / `bbox_normalized` are the crop actually cut from the original image after the geometry
    rule of `processing.crop` (None when no crop ran after this round).
    """

    index: int
    prompt_text: str
    output_text: str
    answer: dict[str, Any] | None = None
    error: str | None = None
    bbox_requested: list[float] | None = None
    bbox_pixels: list[int] | None = None
    bbox_normalized: list[float] | None = None
    crop_adjustments: list[str] = field(default_factory=list)
    hit_token_limit: bool = False
    restoration: dict[str, str | None] = field(default_factory=dict)
    image_grids: list[list[int]] = field(default_factory=list)
    prompt_ids: list[int] = field(default_factory=list)
    output_ids: list[int] = field(default_factory=list)
    output_logprobs: list[float] = field(default_factory=list)


@dataclass
class Trajectory:
    """Everything about one scored input.

    `rating` is the final rating, or None when the output was invalid: then `invalid` holds the error class
    (`missing_answer`, `malformed_json`, `invalid_rating`, ... or `image_error`) and `invalid_round` the
    round it came from. An invalid trajectory is counted and excluded, never given a made-up score.
    `final_answer` is the deciding round's parsed answer (for degradation or comparison tasks it carries
    the class / choice instead of a rating).
    """

    image: str
    task: str
    image_size: list[int] | None = None
    question: str | None = None
    rounds: list[Round] = field(default_factory=list)
    rating: float | None = None
    invalid: str | None = None
    invalid_round: int | None = None
    final_answer: dict[str, Any] | None = None
    routing_warnings: list[str] = field(default_factory=list)
    hit_token_limit: bool = False
    restoration_prompts: dict[str, str | None] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)
    token_ids: list[int] = field(default_factory=list)
    token_mask: list[int] = field(default_factory=list)
    token_logprobs: list[float] = field(default_factory=list)

    @property
    def zoomed(self) -> bool:
        """True when a crop ran (the trajectory has a second round)."""
        return len(self.rounds) > 1

    @property
    def boxes(self) -> list[dict[str, Any]]:
        """The crops that ran: one dict per zoom with the round, requested, pixel and normalized boxes."""
        return [
            {"round": r.index, "requested": r.bbox_requested, "pixels": r.bbox_pixels, "normalized": r.bbox_normalized}
            for r in self.rounds
            if r.bbox_pixels is not None
        ]

    def to_dict(self, tokens: bool = True) -> dict[str, Any]:
        """A JSON-ready dict. `tokens=False` leaves out prompt texts, token ids, log-probs and the mask."""
        d = dataclasses.asdict(self)
        d["boxes"] = self.boxes
        if not tokens:
            for key in ("token_ids", "token_mask", "token_logprobs"):
                d.pop(key)
            for r in d["rounds"]:
                for key in (*_TOKEN_FIELDS, "prompt_text"):
                    r.pop(key)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trajectory:
        """Inverse of `to_dict` (derived keys such as `boxes` are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        round_names = {f.name for f in dataclasses.fields(Round)}
        kw["rounds"] = [Round(**{k: v for k, v in r.items() if k in round_names}) for r in d.get("rounds", [])]
        return cls(**kw)


def count_invalid(trajectories: Iterable[Trajectory]) -> Counter[str]:
    """How many trajectories are invalid, by error class."""
    return Counter(t.invalid for t in trajectories if t.invalid is not None)


def tokenize_with_images(
    tokenizer: Any, text: str, grids: Sequence[Sequence[int]], merge_size: int = 2, *, where: str = "prompt"
) -> list[int]:
    """Tokenize template text and expand each `<|image_pad|>` to its grid's number of merged patches."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    pad = tokenizer.convert_tokens_to_ids(IMAGE_PAD)
    if ids.count(pad) != len(grids):
        raise ValueError(f"{where}: the text holds {ids.count(pad)} image placeholders, {len(grids)} grids given")
    out: list[int] = []
    it = iter(grids)
    for t in ids:
        out.extend([pad] * num_image_tokens(next(it), merge_size) if t == pad else [t])
    return out


@dataclass(frozen=True)
class SplicedPrompt:
    """A prompt whose history holds generated tokens: ids, a 0/1 mask of generated tokens, their log-probs."""

    ids: list[int]
    mask: list[int]
    logprobs: list[float]
    dropped_special: int  # special tokens of the generated reply left out of the history


def splice_assistant_turn(
    tokenizer: Any,
    messages: list[dict[str, Any]],
    generated_ids: Sequence[int],
    generated_logprobs: Sequence[float],
    stop_token: int | None,
    grids: Sequence[Sequence[int]],
    merge_size: int = 2,
) -> SplicedPrompt:
    """Render `messages` (with the generation prompt) where one assistant text equals SPLICE_MARK, putting
    the generated ids there verbatim (see the module docstring). Images may appear only after the mark."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if text.count(SPLICE_MARK) != 1:
        raise ValueError(f"splice: expected the splice mark once in the rendered chat, found {text.count(SPLICE_MARK)}")
    before, after = text.split(SPLICE_MARK)
    before_ids = tokenize_with_images(tokenizer, before, [], merge_size, where="history before the reply")
    after_ids = tokenize_with_images(tokenizer, after, grids, merge_size, where="history after the reply")
    special = set(tokenizer.all_special_ids)
    body = list(zip(generated_ids, generated_logprobs, strict=True))
    if stop_token is not None and body and body[-1][0] == stop_token:
        body = body[:-1]
    kept = [(t, lp) for t, lp in body if t not in special]
    closes = stop_token is not None and bool(after_ids) and after_ids[0] == stop_token
    ids = before_ids + [t for t, _ in kept] + after_ids
    mask = [0] * len(before_ids) + [1] * len(kept) + [int(closes)] + [0] * (len(after_ids) - 1)
    stop_lp = generated_logprobs[-1] if closes else 0.0
    logprobs = [0.0] * len(before_ids) + [lp for _, lp in kept] + [stop_lp] + [0.0] * (len(after_ids) - 1)
    if not after_ids:  # a template that puts nothing after the reply (not Qwen's)
        mask, logprobs = mask[:-1], logprobs[:-1]
    return SplicedPrompt(ids, mask, logprobs, len(body) - len(kept))


def final_sequence(
    prompt_ids: Sequence[int],
    prompt_mask: Sequence[int] | None,
    prompt_logprobs: Sequence[float] | None,
    output_ids: Sequence[int],
    output_logprobs: Sequence[float],
) -> tuple[list[int], list[int], list[float]]:
    """(ids, mask, logprobs) of prompt + output; the output is all generated (mask 1)."""
    n = len(prompt_ids)
    mask = list(prompt_mask) if prompt_mask is not None else [0] * n
    lps = list(prompt_logprobs) if prompt_logprobs is not None else [0.0] * n
    return list(prompt_ids) + list(output_ids), mask + [1] * len(output_ids), lps + list(output_logprobs)


def answer_dict(answer: Any) -> dict[str, Any] | None:
    """A parsed answer (a frozen dataclass) as a JSON-ready dict, with its first error class under "error"."""
    if answer is None:
        return None
    d = dataclasses.asdict(answer)
    for key, value in d.items():
        if isinstance(value, tuple):
            d[key] = list(value)
    d.setdefault("error", getattr(answer, "error", None))
    return d


def make_round(
    tokenizer: Any, index: int, prompt_ids: Sequence[int], out: RowOutput, answer: Any, images: EncodedImages | None
) -> Round:
    """A Round record from the prompt ids, the row's output and its parsed answer."""
    text = decode_output(tokenizer, out.ids)
    restoration = extract_restoration_prompts(text)
    answer_d = answer_dict(answer)
    bbox = answer_d.get("bbox") if answer_d else None
    return Round(
        index=index,
        prompt_text=prompt_text(tokenizer, prompt_ids),
        output_text=text,
        answer=answer_d,
        error=getattr(answer, "error", None),
        bbox_requested=list(bbox) if bbox is not None else None,
        hit_token_limit=out.hit_token_limit,
        restoration={"positive": restoration.positive, "negative": restoration.negative},
        image_grids=[] if images is None else [[int(v) for v in g] for g in images.grids],
        prompt_ids=list(prompt_ids),
        output_ids=list(out.ids),
        output_logprobs=list(out.logprobs),
    )
