"""Rating read-out from next-token probabilities (the Q-Align-style score of a VLM without sampling).

The prompt ends inside the answer, right where the rating's first digit goes (`... "rating": `). With
p_d the model's probability of digit d among the five digits "1".."5" at that position,

    score = sum_d d * p_d / sum_d p_d.

It gives a continuous score for every image in one forward pass, which makes it the natural score of an
untrained or lightly trained model; the reasoning protocol (`zoomiqa_jax.inference.zoom`) is the real one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from zoomiqa_jax.model import Qwen25VL, prepare_inputs
from zoomiqa_jax.processing.image import preprocess_images
from zoomiqa_jax.processing.tokenizer import render_chat, token_ids_of

ANSWER_PREFIX = '<answer>{"rating": '


@nnx.jit
def _last_logits(model: Qwen25VL, ids: jax.Array, mask: jax.Array, pixels: jax.Array, position_ids: jax.Array,
                 meta: Any) -> jax.Array:
    return model(ids, mask, pixels, position_ids=position_ids, vision_meta=meta)[:, -1]


def expected_ratings(
    model: Qwen25VL,
    tokenizer: Any,
    images: Sequence[Any],
    question: str,
    *,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """One score in [1, 5] per image (one forward each; images of equal size share a compiled program).
    `progress` shows a bar over the images."""
    from tqdm.auto import tqdm

    digits = token_ids_of(tokenizer, [str(d) for d in range(1, 6)])
    kw = {k: v for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)) if v is not None}
    scores = []
    for image in tqdm(images, desc="digit read-out", unit="image", dynamic_ncols=True, disable=not progress):
        pixels, grid = preprocess_images([image], **kw)
        messages = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]},
        ]
        ids = render_chat(tokenizer, messages, [tuple(grid[0])])
        ids = ids + tokenizer(ANSWER_PREFIX, add_special_tokens=False)["input_ids"]
        ids = np.asarray([ids], np.int32)
        mask = np.ones_like(ids)
        prep = prepare_inputs(model.config, ids, mask, grid)
        logits = _last_logits(model, jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(pixels),
                              jnp.asarray(prep["position_ids"]), jax.tree.map(jnp.asarray, prep["vision_meta"]))
        p = jax.nn.softmax(logits[0, digits].astype(jnp.float32))
        scores.append(float(jnp.sum(p * jnp.arange(1, 6))))
    return np.asarray(scores, np.float32)
