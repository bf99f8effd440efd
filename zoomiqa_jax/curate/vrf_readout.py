"""The Visual Reliance Filtering read-out (Zoom-IQA (Liang et al.), supp. 6.2; issue 19): the teacher's answer
scored by OUR model with and without the image, from token probabilities, as `filters.AnswerReadout`.

The authors could only sample their API model; we have the logits, so each quantity is an expectation under
one teacher-forced forward pass. For a candidate, the scored turn is its FIRST turn (stage 1: the turn that
sees the image and holds the crop box, if any). The sequence is

    stage-1 prompt (question + instructions [+ image])  |  <think>...</think> (the teacher's rationale R_A)  |
    <answer>{...}</answer> (the teacher's answer A)

rendered twice: with the image (the prompt `zoomiqa_stage1_messages`, as inference renders it) and without it
(the same messages with the image entry removed). R_A and A are the same tokens in both. Then, with
p_t = softmax(logits_{t-1}) the model's full-vocabulary next-token distribution at temperature 1 for answer
token t (float32 logits, the softmax in float64):

* digits: every digit of the answer's `rating` and of its four `bbox_2d` numbers is its own token (the answer
  is tokenized as text runs plus single-digit tokens "0".."9", which is Qwen2's own tokenization of numbers).
  At a digit at decimal place e (10^e), q_k = p_t("k") / sum_j p_t("j") over the ten digit tokens, and the
  number's read-out is ``sum over its digits of 10^e * sum_k k q_k`` (the digit-wise expectation; each digit
  conditioned on the teacher's earlier digits);
* rating: that read-out of the `rating` number; bbox: the four read-outs of `bbox_2d`, None when the teacher's
  box is not four numbers or is the "no crop" box `[0, 0, 0, 0]` (VRF then counts IoU 0: the answer is judged
  by rating and entropy, as `filters` does for final answers);
* entropy: the mean over the answer's tokens t (from the first token of `<answer>` to the last of
  `</answer>`) of ``H(p_t) = -sum_v p_t(v) ln p_t(v)`` in nats (`filters.mean_token_entropy`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from PIL import Image

from zoomiqa_jax.curate.filters import AnswerReadout, mean_token_entropy
from zoomiqa_jax.inference.engine import Buckets, pad_vision_meta
from zoomiqa_jax.inference.rounds import SamplingSettings, encode_images, render_prompt
from zoomiqa_jax.model import causal_mask, prepare_inputs
from zoomiqa_jax.processing.prompts import DEFAULT_PROMPTS, PromptSet, zoomiqa_stage1_messages
from zoomiqa_jax.processing.tokenizer import token_ids_of

DIGITS = tuple(str(d) for d in range(10))
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_RATING = re.compile(r'"rating"\s*:\s*"?\s*(\d+(?:\.\d+)?)')
_BBOX = re.compile(r'"bbox_2d"\s*:\s*\[([^\]]*)\]')
ANSWER_BUCKETS = (32, 64, 128, 256)  # answer-token counts the gather is padded to


@dataclass(frozen=True)
class AnswerTokens:
    """The answer's token ids and, per digit token, (field, number index, decimal exponent, token offset):
    field "rating" (index 0), "bbox" (index 0..3) or "zero_bbox" (the digits of a [0, 0, 0, 0] box)."""

    ids: list[int]
    digits: list[tuple[str, int, int, int]]


def answer_tokens(tokenizer: Any, answer: str) -> AnswerTokens:
    """Tokenize `answer` (``<answer>...</answer>``) as text runs and single-digit tokens (module docstring)."""
    spans: list[tuple[int, int, str, int]] = []  # (start, end, field, index) of each number read out
    rating = _RATING.search(answer)
    if rating:
        spans.append((rating.start(1), rating.end(1), "rating", 0))
    bbox = _BBOX.search(answer)
    if bbox:
        numbers = list(_NUMBER.finditer(bbox.group(1)))
        if len(numbers) == 4:  # a "no crop" box [0, 0, 0, 0] is tokenized the same way but not read out
            field = "bbox" if any(float(m.group()) != 0 for m in numbers) else "zero_bbox"
            spans += [(bbox.start(1) + m.start(), bbox.start(1) + m.end(), field, i) for i, m in enumerate(numbers)]
    spans.sort()
    digit_ids = [int(i) for i in token_ids_of(tokenizer, DIGITS)]
    ids: list[int] = []
    digits: list[tuple[str, int, int, int]] = []

    def text(piece: str) -> None:
        if piece:
            ids.extend(tokenizer(piece, add_special_tokens=False)["input_ids"])

    cursor = 0
    for start, end, field, index in spans:
        text(answer[cursor:start])
        number = answer[start:end]
        whole = number.split(".")[0]
        exponent = len(whole) - 1
        for ch in number:
            if ch == ".":
                text(".")
                continue
            digits.append((field, index, exponent, len(ids)))
            ids.append(digit_ids[int(ch)])
            exponent -= 1
        cursor = end
    text(answer[cursor:])
    return AnswerTokens(ids, digits)


@nnx.jit
def _logits_at(model: Any, ids: jax.Array, mask: jax.Array, pixels: jax.Array | None, position_ids: jax.Array,
               meta: Any, where: jax.Array) -> jax.Array:
    """Logits [K, vocab] (float32) at sequence positions `where` [K] of row 0: the decoder runs over the whole
    sequence, the vocabulary projection only at `where`."""
    t = ids.shape[1]
    embeds = model.embed(ids, pixels, meta)
    hidden, _ = model.language_model(embeds, position_ids, causal_mask(mask, t, t), None, None)
    return model.logits(hidden[0, where]).astype(jnp.float32)


def _softmax64(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x = np.exp(x - x.max(axis=-1, keepdims=True))
    return x / x.sum(axis=-1, keepdims=True)


def readout(model: Any, prompt_ids: Sequence[int], answer: AnswerTokens, images: Any | None, digit_ids: np.ndarray,
            buckets: Buckets | None = None) -> AnswerReadout:
    """Teacher-force `prompt_ids + answer.ids` (images: `EncodedImages` or None) and read the answer out."""
    buckets = buckets or Buckets()
    pad = model.config.bos_token_id
    seq = list(prompt_ids) + answer.ids
    width = Buckets.pick(len(seq), buckets.prompt_lengths)
    ids = np.full((1, width), pad, np.int32)
    mask = np.zeros((1, width), np.int32)
    ids[0, : len(seq)], mask[0, : len(seq)] = seq, 1  # right padding: causal, so earlier positions are unchanged
    grid = None if images is None else images.grids
    prep = prepare_inputs(model.config, ids, mask, grid)
    k = len(answer.ids)
    where = np.arange(len(prompt_ids) - 1, len(prompt_ids) - 1 + k)  # logits at t-1 predict answer token t
    where = np.concatenate([where, np.full(Buckets.pick(k, ANSWER_BUCKETS) - k, where[-1])])
    pixels = meta = None
    if images is not None:  # patches padded to a bucket as the engine pads them: one program per bucket
        pv = images.pixel_values
        n = Buckets.pick(len(pv), buckets.patch_counts)
        pixels = jnp.asarray(np.concatenate([pv, np.zeros((n - len(pv), pv.shape[1]), pv.dtype)]))
        chunk = Buckets.pick(int(np.prod(grid, axis=-1).max()), buckets.patch_counts)
        padded = pad_vision_meta(prep["vision_meta"], n, model.config.vision.merge_unit,
                                 full_chunk=chunk if n > 3 * chunk else None)
        meta = jax.tree.map(jnp.asarray, padded)
    logits = _logits_at(model, jnp.asarray(ids), jnp.asarray(mask), pixels, jnp.asarray(prep["position_ids"]), meta,
                        jnp.asarray(where, jnp.int32))
    probs = _softmax64(np.asarray(logits)[:k])  # [k, vocab]
    values: dict[tuple[str, int], float] = {}
    for field, index, exponent, offset in answer.digits:
        q = probs[offset, digit_ids]
        q = q / q.sum()
        values[(field, index)] = values.get((field, index), 0.0) + 10.0**exponent * float(np.dot(np.arange(10), q))
    box = tuple(values[("bbox", i)] for i in range(4)) if ("bbox", 0) in values else None
    return AnswerReadout(values.get(("rating", 0), 0.0), box, mean_token_entropy(probs))  # type: ignore[arg-type]


def vrf_readouts(
    model: Any, tokenizer: Any, image: Image.Image, question: str, turn_text: str, settings: SamplingSettings,
    prompts: PromptSet = DEFAULT_PROMPTS,
) -> tuple[AnswerReadout, AnswerReadout]:
    """(with image, text only) read-outs of one stage-1 turn (module docstring). Raises ValueError when the
    turn has no `<answer>` block or no rating to read out."""
    cut = turn_text.find("<answer>")
    end = turn_text.find("</answer>", cut)
    if cut < 0 or end < 0:
        raise ValueError("the turn has no <answer>...</answer> block to read out")
    answer = answer_tokens(tokenizer, turn_text[cut : end + len("</answer>")])
    if not any(field == "rating" for field, *_ in answer.digits):
        raise ValueError("the answer has no numeric rating to read out")
    rationale = tokenizer(turn_text[:cut], add_special_tokens=False)["input_ids"] if cut else []
    digit_ids = token_ids_of(tokenizer, DIGITS)
    merge = model.config.vision.spatial_merge_size
    messages = zoomiqa_stage1_messages(question, prompts)
    encoded = encode_images([image], settings, merge)
    with_ids = render_prompt(tokenizer, messages, encoded, merge) + rationale
    blind = [{**m, "content": [c for c in m["content"] if c.get("type") != "image"]} for m in messages]
    blind_ids = render_prompt(tokenizer, blind, None, merge) + rationale
    return (readout(model, with_ids, answer, encoded, digit_ids, settings.buckets),
            readout(model, blind_ids, answer, None, digit_ids, settings.buckets))
