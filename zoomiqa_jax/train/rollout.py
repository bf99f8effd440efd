"""From sampled trajectories to the rollout batch of the GRPO step (`zoomiqa_jax.train.grpo`), plus group sampling.

Layout of the module:

* `rating_token_mask` marks the tokens of one generated reply that spell the numeric rating inside its LAST
  `<answer>...</answer>` block (the KL-Coverage candidates, N_ans of arXiv:2601.02918 Sec. 3.2): the value of the
  `"rating"` key, or, for an answer block without a JSON object (VisualQuality-R1 `<answer>4.25</answer>`), its
  first number. Characters are mapped to tokens through decoded token prefixes (byte-level BPE safe: a prefix
  that ends inside a multi-byte character counts only up to the last character it completes).
* `group_stage1_generate` wraps a sampler (`engine.generate`) for `run_zoomiqa(stage1_generate_fn=...)` when
  every prompt was replicated G times consecutively: it samples the G rows of each prompt after ONE shared
  prefill (`generate(..., group=G)`) with the very row keys it was given, so the result equals the ungrouped
  call (same keys, same tokens; only the prefill work is shared). To make the replicated prompts identical,
  give the G replicas one explicit `ImageItem.question` (otherwise each index draws its own paraphrase), and
  distinct `index` values (which seed the rows).
* `build_rollout_batch` lays N trajectories out as one right-padded batch of ROUND rows: every round of a
  trajectory is one row, its prompt exactly as the sampler saw it followed by the tokens it generated, so each
  generated token is trained in the context it was sampled in (pi(y_t | q, y_<t, I_<t), arXiv:2601.02918 supp.
  Eq. 7). A crop trajectory gives two rows: stage 1 (the stage-1 prompt and image, its reply) and stage 2 (the
  protocol's stage-2 prompt, whose history holds the stage-1 reply as context, mask 0, and its reply). Training
  the stage-1 reply only inside the stage-2 history would train the crop decision and its box in a context
  without the stage-1 instruction and image (the published protocol's stage-2 history), where it is never
  made. Rows follow trajectory order, rounds in order; `rows=` pads with empty rows (one attended pad token,
  nothing trained, no image) to a fixed row count, so the step compiles for a few row counts only:

      input_ids, attention_mask   [R, T] int32   Round.prompt_ids + Round.output_ids, pad 0 mask
      loss_mask                   [R, T] int32   1 on the round's generated tokens
      sample_logp                 [R, T] float32 Round.output_logprobs (sampling time, same context)
      candidate_mask              [R, T] int32   rating tokens of the round's reply
      logit_positions             [R, K] int32   positions of the candidate tokens, then -1 (K = candidate_slots,
                                                 doubled until every row's candidates fit)
      advantages                  [R]    float32 the row's trajectory's advantage (0 on padding rows)
      seq_tokens                  [R]    int32   generated tokens of the row's trajectory, all rounds (0 on
                                                 padding): `grpo_loss.aggregate_loss` keeps its sequence mean a
                                                 mean over trajectories
      pixel_values                [P, D] float32 each row's images (stage 1: the protocol's stage-1 image;
                                                 stage 2: the original, then the crop) in row order, zero
                                                 patches up to the patch bucket P
      patch_mask [P] bool, image_grid_thw [images, 3] int64, image_counts [R] int32     (host-side metadata)
      row_trajectory [R] int32 (host-side: the trajectory of each row, -1 for padding)
      position_ids [3, R, T] int32, vision_meta VisionMeta                             (`sft_data.add_model_inputs`)

  The images are re-rendered from the ORIGINAL image exactly as `inference.zoom` does (the protocol's stage-1
  image, or its stage-2 pair with the crop of the stage-1 requested box on the original's pixel size, then
  `preprocess_images`; `inference.protocol`), and their grids are checked against the ones the sampler saw.
  Sequences are never truncated.
* `rollout_metrics`: crop rate, turns, response length, invalid and token-limit rates of a rollout.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from zoomiqa_jax.inference import engine
from zoomiqa_jax.inference.engine import Buckets, GenerateOutput
from zoomiqa_jax.inference.protocol import Protocol
from zoomiqa_jax.inference.rounds import GenerateFn
from zoomiqa_jax.inference.trajectory import Trajectory
from zoomiqa_jax.model import VisionMeta
from zoomiqa_jax.processing import official_answers
from zoomiqa_jax.processing.image import num_image_tokens, preprocess_images
from zoomiqa_jax.train.sft_data import SequenceTooLongError, add_model_inputs

_RATING = re.compile(r"""["']?rating["']?\s*:\s*["']?\s*(-?\d+(?:\.\d*)?)""")
_BARE_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")  # VisualQuality-R1's reading (its reward's -?\d+(\.\d+)?)


class RolloutError(ValueError):
    """A trajectory that cannot be laid out in a rollout batch; the message names its image."""


# ---- rating tokens ----

def _last_answer_span(text: str) -> tuple[int, int] | None:
    """(start, end) of the content of the last complete `<answer>...</answer>` block (as `answer_block(last=True)`)."""
    found = None
    start = text.find("<answer>")
    while start >= 0:
        end = text.find("</answer>", start + 8)
        if end < 0:
            break
        found = (start + 8, end)
        start = text.find("<answer>", end + 9)
    return found


def _rating_span(text: str, official: bool = False) -> tuple[int, int] | None:
    """Character span of the rating number in `text`, or None. `official`: in the answer object the official
    protocol reads (`official_answers.answer_span`, the first match of the authors' regex), else in the last
    `<answer>` block."""
    span = official_answers.answer_span(text) if official else _last_answer_span(text)
    if span is None:
        return None
    block = text[span[0]:span[1]]
    match = _RATING.search(block)
    if match is not None:
        return span[0] + match.start(1), span[0] + match.end(1)
    if "{" in block:  # a JSON object without a readable rating
        return None
    match = _BARE_NUMBER.search(block)
    return None if match is None else (span[0] + match.start(), span[0] + match.end())


def _decode(tokenizer: Any, ids: Sequence[int]) -> str:
    return tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)


def rating_token_mask(tokenizer: Any, output_ids: Sequence[int], *, official: bool = False) -> np.ndarray:
    """Bool [len(output_ids)]: True on the tokens whose characters overlap the rating number of the reply's last
    `<answer>` block (module docstring; `official`: of the answer object the official protocol reads). Never
    raises on a model output: no answer / no rating -> all False."""
    ids = [int(t) for t in output_ids]
    out = np.zeros(len(ids), bool)
    if not ids:
        return out
    try:
        full = _decode(tokenizer, ids)
    except Exception:  # ids outside the vocabulary: nothing to mark
        return out
    span = _rating_span(full, official)
    if span is None:
        return out
    lo, hi = span
    ends: dict[int, int] = {0: 0, len(ids): len(full)}

    def end(k: int) -> int:
        """Characters of `full` completed by the first k tokens (monotone in k)."""
        if k not in ends:
            prefix = _decode(tokenizer, ids[:k])
            if full.startswith(prefix):
                n = len(prefix)
            else:  # ends inside a multi-byte character (a replacement char) or decodes differently
                n = 0
                for a, b in zip(prefix, full):
                    if a != b:
                        break
                    n += 1
            ends[k] = n
        return ends[k]

    def first_k(pred: Any, lo_k: int, hi_k: int) -> int:
        """Smallest k in [lo_k, hi_k] with pred(k) True (hi_k + 1 when none); pred monotone False -> True."""
        while lo_k <= hi_k:
            mid = (lo_k + hi_k) // 2
            if pred(mid):
                hi_k = mid - 1
            else:
                lo_k = mid + 1
        return lo_k

    # token i spans [end(i), end(i + 1)); it overlaps [lo, hi) when end(i + 1) > lo and end(i) < hi
    first = first_k(lambda k: end(k) > lo, 1, len(ids)) - 1
    last = first_k(lambda k: end(k) >= hi, 0, len(ids) - 1) - 1
    if 0 <= first <= last < len(ids):
        out[first:last + 1] = True
    return out


# ---- group sampling of stage 1 ----

def _row_images(ids: np.ndarray, mask: np.ndarray, grids: np.ndarray | None, vision_start: int) -> list[int] | None:
    """Images per row (from the `<|vision_start|>` tokens); None when they do not account for every grid."""
    counts = [int((row[m == 1] == vision_start).sum()) for row, m in zip(ids, mask)]
    n_grids = 0 if grids is None else len(grids)
    return counts if sum(counts) == n_grids else None


def group_stage1_generate(group: int, generate_fn: GenerateFn = engine.generate) -> GenerateFn:
    """A sampler with `engine.generate`'s signature for `run_zoomiqa(stage1_generate_fn=...)` when rows come in
    consecutive runs of `group` identical prompts (module docstring). Each run's prompt is prefilled once and
    sampled `group` times (`generate_fn(..., group=group)`) with the row keys given, one per row, so the output
    equals the ungrouped call's. Rows that are not such runs (row count not a multiple of `group`, differing
    ids, mask or images) go to `generate_fn` unchanged."""
    if group < 1:
        raise ValueError(f"group_stage1_generate: group must be >= 1, found {group}")

    def generate(
        model: Any, input_ids: Any, attention_mask: Any | None = None, pixel_values: Any | None = None,
        image_grid_thw: Any | None = None, **kwargs: Any,
    ) -> GenerateOutput:
        plain = lambda: generate_fn(model, input_ids, attention_mask, pixel_values, image_grid_thw, **kwargs)
        if group == 1 or kwargs.get("group", 1) != 1:
            return plain()
        ids = np.asarray(input_ids)
        mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask)
        rows = len(ids)
        if rows % group or ids.ndim != 2:
            return plain()
        grids = None if image_grid_thw is None else np.asarray(image_grid_thw).reshape(-1, 3)
        counts = _row_images(ids, mask, grids, model.config.vision_start_token_id)
        if counts is None or (grids is not None and pixel_values is None):
            return plain()
        pixels = None if pixel_values is None else np.asarray(pixel_values)
        grid_at = np.concatenate([[0], np.cumsum(counts)]).astype(int)
        patches = np.concatenate([[0], np.cumsum([int(np.prod(g)) for g in grids])]) if grids is not None else None
        if patches is not None and pixels is not None and int(patches[-1]) != len(pixels):
            return plain()

        def images(r: int) -> tuple[np.ndarray | None, np.ndarray | None]:
            if grids is None:
                return None, None
            g0, g1 = grid_at[r], grid_at[r + 1]
            return grids[g0:g1], pixels[patches[g0]:patches[g1]]

        for start in range(0, rows, group):
            g_ref, p_ref = images(start)
            for r in range(start + 1, start + group):
                if not (np.array_equal(ids[r], ids[start]) and np.array_equal(mask[r], mask[start])):
                    return plain()
                g_r, p_r = images(r)
                if grids is not None and not (np.array_equal(g_r, g_ref) and np.array_equal(p_r, p_ref)):
                    return plain()
        heads = range(0, rows, group)
        parts = [images(r) for r in heads]
        kept = [p for p in parts if p[0] is not None and len(p[0])]
        u_grids = np.concatenate([g for g, _ in kept]) if kept else None
        u_pixels = np.concatenate([p for _, p in kept]) if kept else None
        sel = np.asarray(list(heads))
        return generate_fn(model, ids[sel], mask[sel], u_pixels, u_grids, **dict(kwargs, group=group))

    return generate


# ---- the rollout batch ----

def trajectory_problem(trajectory: Trajectory, config: Any) -> str | None:
    """Why `trajectory` cannot go into a rollout batch (None when it can): an image error, no token sequence,
    or a generated vision placeholder token (the forward would read it as an image)."""
    t = trajectory
    if t.invalid == "image_error":
        return f"trajectory of image {t.image!r} has an image error (filter image_error trajectories first)"
    if not t.token_ids or not t.rounds:
        return f"trajectory of image {t.image!r} has no token sequence"
    if not len(t.token_ids) == len(t.token_mask) == len(t.token_logprobs):
        return f"trajectory of image {t.image!r}: token_ids, token_mask and token_logprobs differ in length"
    ids, mask = np.asarray(t.token_ids), np.asarray(t.token_mask, bool)
    vision = (config.image_token_id, config.video_token_id, config.vision_start_token_id)
    generated = [ids[mask], *(np.asarray(r.output_ids, np.int64) for r in t.rounds)]
    if any(np.isin(g, vision).any() for g in generated):
        return f"trajectory of image {t.image!r} generated a vision token (image pad / video pad / vision start)"
    if len(t.rounds) > 2:
        return f"trajectory of image {t.image!r} has {len(t.rounds)} rounds; rollout batches take one or two"
    for r in t.rounds:
        if len(r.output_ids) != len(r.output_logprobs) or not r.prompt_ids:
            return (f"trajectory of image {t.image!r}: round {r.index} lacks its prompt ids or has "
                    f"{len(r.output_ids)} output ids for {len(r.output_logprobs)} log-probs")
    last = t.rounds[-1]
    if list(t.token_ids) != list(last.prompt_ids) + list(last.output_ids):
        return f"trajectory of image {t.image!r}: its token sequence is not the last round's prompt and output"
    return None


def round_rows(trajectory: Trajectory) -> list[tuple[list[int], int]]:
    """(token ids, index of the first generated token) of each training row of `trajectory`: one per round,
    the round's prompt then its output (`build_rollout_batch`)."""
    return [(list(r.prompt_ids) + list(r.output_ids), len(r.prompt_ids)) for r in trajectory.rounds]


def _round_images(
    t: Trajectory, round_index: int, original: Image.Image, config: Any, min_pixels: int, max_pixels: int,
    protocol: Protocol,
) -> tuple[np.ndarray, np.ndarray]:
    """The images of round `round_index` (0: stage 1, 1: stage 2) re-rendered from the original as
    `inference.zoom` does (the protocol's stage-1 image; stage 2: its pair with the crop of the box stage 1 asked
    for); grids checked against the sampled ones."""
    if t.image_size is not None and list(original.size) != list(t.image_size):
        raise RolloutError(f"trajectory of image {t.image!r}: original is {list(original.size)}, the trajectory "
                           f"was sampled on {t.image_size}")
    original = original.convert("RGB") if original.mode != "RGB" else original
    if round_index == 0:
        images = protocol.stage1_images(original)
    else:
        first = t.rounds[0]
        images, cut = protocol.stage2_images(original, protocol.requested_box(first.answer))
        if first.bbox_pixels is not None and list(cut.pixel) != list(first.bbox_pixels):
            raise RolloutError(f"trajectory of image {t.image!r}: crop box {list(cut.pixel)} != the sampled "
                               f"{first.bbox_pixels}")
    merge = config.vision.spatial_merge_size
    pixels, grids = preprocess_images(images, min_pixels=min_pixels, max_pixels=max_pixels, merge_size=merge)
    expected = t.rounds[round_index].image_grids
    if [[int(v) for v in g] for g in grids] != [[int(v) for v in g] for g in expected]:
        raise RolloutError(f"trajectory of image {t.image!r}: re-rendered image grids {grids.tolist()} of round "
                           f"{round_index + 1} differ from the sampled {expected} (same original and "
                           "min/max_pixels as sampling?)")
    n_tokens = sum(num_image_tokens(g, merge) for g in grids)
    if int(np.sum(np.asarray(t.rounds[round_index].prompt_ids) == config.image_token_id)) != n_tokens:
        raise RolloutError(f"trajectory of image {t.image!r}: image tokens in the round-{round_index + 1} prompt "
                           f"!= {n_tokens} of its grids")
    return pixels, np.asarray(grids, np.int64)


def build_rollout_batch(
    trajectories: Sequence[Trajectory],
    originals: Sequence[Image.Image],
    advantages: np.ndarray,
    tokenizer: Any,
    config: Any,
    *,
    min_pixels: int,
    max_pixels: int,
    seq_buckets: Sequence[int],
    patch_buckets: Sequence[int],
    candidate_slots: int = 16,
    pad_token_id: int,
    protocol: Protocol | None = None,
    rows: int | None = None,
) -> dict[str, np.ndarray | VisionMeta]:
    """The GRPO rollout batch of `trajectories` (one row per round; layout in the module docstring).

    `originals[i]` is trajectory i's image as loaded for sampling (original pixel size); `advantages` [N];
    `min_pixels` / `max_pixels` must be the sampling settings'. `rows`: pad to this many rows (at least the
    number of rounds; None: no padding). Raises RolloutError (naming the image) for a trajectory
    `trajectory_problem` rejects, or images that do not re-render to the sampled grids; SequenceTooLongError
    for a row over the largest sequence bucket. The batch's patches pad to a patch bucket (`Buckets.pick`: past
    the largest one, the next multiple of it). Nothing is truncated.
    """
    n = len(trajectories)
    if n == 0:
        raise ValueError("build_rollout_batch: expected at least one trajectory, found none")
    advantages = np.asarray(advantages, np.float32).reshape(-1)
    if len(originals) != n or len(advantages) != n:
        raise ValueError(f"build_rollout_batch: {n} trajectories, {len(originals)} originals, "
                         f"{len(advantages)} advantages")
    if any(p % config.vision.merge_unit for p in patch_buckets):
        raise ValueError(f"build_rollout_batch: patch buckets {list(patch_buckets)} must be multiples of "
                         f"{config.vision.merge_unit}")
    layout = []  # (trajectory, round, ids, first generated position)
    for k, t in enumerate(trajectories):
        problem = trajectory_problem(t, config)
        if problem is not None:
            raise RolloutError(f"build_rollout_batch: {problem}")
        for r, (ids, start) in enumerate(round_rows(t)):
            if len(ids) > max(seq_buckets):
                raise SequenceTooLongError(f"build_rollout_batch: round {r + 1} of the trajectory of image "
                                           f"{t.image!r} has {len(ids)} tokens, over the largest sequence bucket "
                                           f"{max(seq_buckets)} (sequences are never truncated)")
            layout.append((k, r, ids, start))
    n_rows = len(layout) if rows is None else rows
    if n_rows < len(layout):
        raise ValueError(f"build_rollout_batch: rows={rows} is fewer than the {len(layout)} rounds of "
                         f"{n} trajectories")
    width = Buckets.pick(max(len(ids) for _, _, ids, _ in layout), seq_buckets)
    batch: dict[str, Any] = {
        "input_ids": np.full((n_rows, width), pad_token_id, np.int32),
        "attention_mask": np.zeros((n_rows, width), np.int32),
        "loss_mask": np.zeros((n_rows, width), np.int32),
        "sample_logp": np.zeros((n_rows, width), np.float32),
        "candidate_mask": np.zeros((n_rows, width), np.int32),
        "advantages": np.zeros(n_rows, np.float32),
        "seq_tokens": np.zeros(n_rows, np.int32),
        "row_trajectory": np.full(n_rows, -1, np.int32),
    }
    batch["attention_mask"][len(layout):, 0] = 1  # padding rows: one attended pad token, nothing trained
    pixels, grids, counts = [], [], np.zeros(n_rows, np.int32)
    official = protocol is not None and protocol.name == "official"  # the rating its parser reads
    for row, (k, r, ids, start) in enumerate(layout):
        t, out = trajectories[k], trajectories[k].rounds[r]
        batch["input_ids"][row, :len(ids)] = ids
        batch["attention_mask"][row, :len(ids)] = 1
        batch["loss_mask"][row, start:len(ids)] = 1
        batch["sample_logp"][row, start:len(ids)] = out.output_logprobs
        batch["candidate_mask"][row, start:len(ids)] = rating_token_mask(tokenizer, out.output_ids,
                                                                         official=official)
        batch["advantages"][row] = advantages[k]
        batch["seq_tokens"][row] = sum(len(x.output_ids) for x in t.rounds)
        batch["row_trajectory"][row] = k
        p, g = _round_images(t, r, originals[k], config, min_pixels, max_pixels, protocol or Protocol("strict"))
        pixels.append(p)
        grids.append(g)
        counts[row] = len(g)
    # Slots for every candidate: `candidate_slots`, doubled until the row with the most rating tokens fits (a
    # sampled rating such as 3.3333333333 has many), so no candidate is ever dropped; a larger K compiles anew.
    per_row = batch["candidate_mask"].sum(axis=1)
    slots = candidate_slots
    while slots < per_row.max():
        slots *= 2
    batch["logit_positions"] = np.full((n_rows, slots), -1, np.int32)
    for row in range(n_rows):
        positions = np.flatnonzero(batch["candidate_mask"][row])
        batch["logit_positions"][row, :len(positions)] = positions
    flat = np.concatenate(pixels).astype(np.float32)
    total = Buckets.pick(len(flat), patch_buckets)
    batch["pixel_values"] = np.concatenate([flat, np.zeros((total - len(flat), flat.shape[1]), np.float32)])
    batch["patch_mask"] = np.arange(total) < len(flat)
    batch["image_grid_thw"] = np.concatenate(grids).astype(np.int64)
    batch["image_counts"] = counts
    return add_model_inputs(batch, config, patch_buckets)


def row_bucket(n_rows: int, n_trajectories: int, multiple: int = 1) -> int:
    """The padded row count for `n_rows` round rows of `n_trajectories` trajectories: the smallest of
    n x (1, 1.25, 1.5, 2), rounded up to `multiple` (the mesh's batch ways), that holds them. A few row counts
    keep the number of compiled GRPO steps small whatever share of the trajectories crops."""
    for factor in (1.0, 1.25, 1.5, 2.0):
        size = -(-int(np.ceil(n_trajectories * factor)) // multiple) * multiple
        if size >= n_rows:
            return size
    return -(-n_rows // multiple) * multiple


def rollout_metrics(trajectories: Sequence[Trajectory]) -> dict[str, float]:
    """Rollout statistics over `trajectories`: `rollout/crop_rate` (share with a second round),
    `rollout/mean_turns`, `rollout/mean_response_tokens` (generated tokens over all rounds, stop tokens
    included), `rollout/invalid_rate` (a format-invalid answer: any `invalid` class but `image_error`),
    `rollout/image_error_rate`, `rollout/hit_token_limit_rate` and `rollout/count`."""
    n = len(trajectories)
    if n == 0:
        return {"rollout/count": 0.0}
    mean = lambda values: float(np.mean([float(v) for v in values]))
    return {
        "rollout/count": float(n),
        "rollout/crop_rate": mean(t.zoomed for t in trajectories),
        "rollout/mean_turns": mean(len(t.rounds) for t in trajectories),
        "rollout/mean_response_tokens": mean(sum(len(r.output_ids) for r in t.rounds) for t in trajectories),
        "rollout/invalid_rate": mean(t.invalid is not None and t.invalid != "image_error" for t in trajectories),
        "rollout/image_error_rate": mean(t.invalid == "image_error" for t in trajectories),
        "rollout/hit_token_limit_rate": mean(t.hit_token_limit for t in trajectories),
    }
