"""One batched generation round: render prompts, pad rows, call the sampler once, split the result per row.

Both the Zoom-IQA multi-round loop (`zoom.py`) and the single-turn Q-Insight / VisualQuality-R1 runs
(`single_turn.py`) sample through `sample_round`, so every run shares the same batching, seeding and
stop-token handling:

* rows are left-padded to one length; the number of rows is padded up to a power of two with one-token
  dummy rows (their output is thrown away), so a folder of N images compiles O(log batch) programs, not one
  per distinct stage-2 batch size;
* row r of a run draws its randomness from `fold_in(fold_in(key(seed), index_r), round)`: an image gets
  the same key whichever other images share its batch;
* the sampler is pluggable (`generate_fn`, the signature of `zoomiqa_jax.inference.engine.generate`), which is
  the test hook for scripted outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from zoomiqa_jax.inference.engine import Buckets, GenerateOutput
from zoomiqa_jax.processing.image import MAX_PIXELS, MIN_PIXELS, preprocess_images
from zoomiqa_jax.processing.tokenizer import IMAGE_PAD, render_chat

GenerateFn = Callable[..., GenerateOutput]
"""A sampler with the signature of `zoomiqa_jax.inference.engine.generate`."""


@dataclass(frozen=True)
class SamplingSettings:
    """How every round samples. Defaults are the Zoom-IQA authors' published ones (issue 3): temperature 1.0,
    top_p 0.95, top_k 50, 1024 new tokens per round. `temperature` 0 is greedy.

    `min_pixels` / `max_pixels` bound the area of every image given to the model (original and crop), as
    the HF processor's `min_pixels` / `max_pixels`. `eos_token_ids` None stops on the model config's
    `<|im_end|>` and `<|endoftext|>`.
    """

    max_new_tokens: int = 1024
    temperature: float = 1.0
    top_p: float = 0.95
    top_k: int = 50
    seed: int = 0
    min_pixels: int = MIN_PIXELS
    max_pixels: int = MAX_PIXELS
    eos_token_ids: tuple[int, ...] | None = None
    buckets: Buckets | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"SamplingSettings.max_new_tokens: expected >= 1, found {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"SamplingSettings.temperature: expected >= 0, found {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"SamplingSettings.top_p: expected in (0, 1], found {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"SamplingSettings.top_k: expected >= 0 (0 disables), found {self.top_k}")


DEFAULT_SETTINGS = SamplingSettings()


@dataclass(frozen=True)
class ImageItem:
    """One input image: its display name (path or id), the loaded image at its ORIGINAL pixel size (RGB, or the
    file's own mode under the `official` protocol), its position in the whole run (seeds its question and
    sampling), an optional question of its own, and the user turn of the stage-2 history when that differs from
    the question (the `official` protocol keeps a record's raw question there; None: the question)."""

    name: str
    image: Image.Image
    index: int = 0
    question: str | None = None
    history_question: str | None = None


@dataclass(frozen=True)
class EncodedImages:
    """Patches of one row's images, in the order they appear in its prompt."""

    pixel_values: np.ndarray  # [patches, patch_dim] float32
    grids: np.ndarray  # [images, 3] int64, (t, h, w) in patches


@dataclass(frozen=True)
class RowPrompt:
    """One row of a round: its prompt token ids (images expanded) and the images they refer to."""

    ids: list[int]
    images: EncodedImages | None
    index: int  # the item's position in the whole run (seeds its randomness)


@dataclass(frozen=True)
class RowOutput:
    """What one row generated. `ids` holds every generated token, the stop token included when there is one."""

    ids: list[int]
    logprobs: list[float]  # log p(token) under the unfiltered model at temperature 1 (the engine's convention)
    stop_token: int | None  # the stop token that ended the row, None when the token limit ended it
    hit_token_limit: bool


def encode_images(images: Sequence[Image.Image], settings: SamplingSettings, merge_size: int = 2) -> EncodedImages:
    """Qwen2-VL patches of `images` (RGB PIL). Raises ValueError for an aspect ratio over 200."""
    pixels, grids = preprocess_images(
        list(images), min_pixels=settings.min_pixels, max_pixels=settings.max_pixels, merge_size=merge_size
    )
    return EncodedImages(pixels, grids)


def render_prompt(tokenizer: Any, messages: list[dict], images: EncodedImages | None, merge_size: int = 2) -> list[int]:
    """Token ids of `messages` with the generation prompt, each image placeholder expanded to its grid."""
    grids = [] if images is None else [tuple(int(v) for v in g) for g in images.grids]
    return render_chat(tokenizer, messages, grids, merge_size=merge_size)


def prompt_text(tokenizer: Any, ids: Sequence[int]) -> str:
    """The prompt as text, special tokens kept and each run of image pads collapsed to one `<|image_pad|>`."""
    pad = tokenizer.convert_tokens_to_ids(IMAGE_PAD)
    kept = [t for i, t in enumerate(ids) if t != pad or i == 0 or ids[i - 1] != pad]
    return tokenizer.decode(kept, skip_special_tokens=False)


def decode_output(tokenizer: Any, ids: Sequence[int]) -> str:
    """Generated ids as text, special tokens (the stop token, stray vision tokens) dropped, as published."""
    return tokenizer.decode(list(ids), skip_special_tokens=True)


def row_keys(seed: int, indices: Sequence[int], round_index: int) -> jax.Array:
    """One PRNG key per row: fold_in(fold_in(key(seed), index), round)."""
    base = jax.random.key(seed)
    return jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(base, i), round_index))(
        jnp.asarray(list(indices), jnp.int32)
    )


def _padded_rows(n: int) -> int:
    """The batch size actually run: the next power of two >= n."""
    return 1 << max(0, (n - 1).bit_length())


def sample_round(
    model: Any,
    rows: Sequence[RowPrompt],
    settings: SamplingSettings,
    *,
    round_index: int,
    pad_token_id: int,
    generate_fn: GenerateFn,
) -> list[RowOutput]:
    """Sample every row of `rows` in ONE `generate_fn` call; returns one RowOutput per row, in order."""
    if not rows:
        return []
    cfg = model.config
    n = len(rows)
    total = _padded_rows(n)
    prompts = [list(r.ids) for r in rows] + [[pad_token_id]] * (total - n)
    width = max(len(p) for p in prompts)
    ids = np.full((total, width), pad_token_id, np.int32)
    mask = np.zeros((total, width), np.int32)
    for r, p in enumerate(prompts):
        ids[r, width - len(p):] = p
        mask[r, width - len(p):] = 1
    encoded = [r.images for r in rows if r.images is not None]
    pixels = np.concatenate([e.pixel_values for e in encoded]) if encoded else None
    grids = np.concatenate([e.grids for e in encoded]) if encoded else None
    indices = [r.index for r in rows] + [-1 - k for k in range(total - n)]
    eos = settings.eos_token_ids or (cfg.eos_token_id, cfg.bos_token_id)
    out = generate_fn(
        model, ids, mask, pixels, grids,
        max_new_tokens=settings.max_new_tokens, temperature=settings.temperature, top_p=settings.top_p,
        top_k=settings.top_k, eos_token_ids=eos, row_keys=row_keys(settings.seed, indices, round_index),
        buckets=settings.buckets,
    )
    tokens, logps, lengths = (np.asarray(x) for x in out)
    results = []
    for r in range(n):
        length = int(lengths[r])
        gen = [int(t) for t in tokens[r, :length]]
        stop = gen[-1] if gen and gen[-1] in eos else None
        results.append(RowOutput(gen, [float(v) for v in logps[r, :length]], stop, stop is None))
    return results
