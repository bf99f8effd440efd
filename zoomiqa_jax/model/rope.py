"""Rotary position embeddings: 2-D RoPE of the vision tower and multimodal RoPE (M-RoPE) of the decoder.

The position ids themselves depend on image sizes and on where image tokens sit in the prompt; they are
computed on the host in NumPy (`get_rope_index`, `zoomiqa_jax.model.vision.vision_metadata`) so that the
jitted forward sees only fixed-shape integer arrays.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from zoomiqa_jax.config import ModelConfig


def rotate_half(x: jax.Array) -> jax.Array:
    x1, x2 = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([-x2, x1], axis=-1)


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x * cos + rotate_half(x) * sin; cos/sin broadcast over the heads axis (-2)."""
    return x * cos[..., None, :] + rotate_half(x) * sin[..., None, :]


def inv_frequencies(dim: int, theta: float) -> np.ndarray:
    """1 / theta^(2i / dim), i = 0 .. dim/2 - 1, in float32 as the reference computes it."""
    return (1.0 / (theta ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)))).astype(np.float32)


def vision_rope(positions: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """Axial 2-D RoPE. positions: [n, 2] (row, col) -> cos, sin: [n, head_dim] float32.

    The first quarter of the frequencies rotates by row, the second by column; the halves are duplicated
    (layout [h, w, h, w]) to rotate the whole head dimension.
    """
    inv = jnp.asarray(inv_frequencies(head_dim // 2, theta))  # [head_dim/4]
    freqs = positions.astype(jnp.float32)[..., None] * inv  # [n, 2, head_dim/4]
    freqs = jnp.concatenate([freqs[:, 0], freqs[:, 1]], axis=-1)  # [n, head_dim/2]
    freqs = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(freqs), jnp.sin(freqs)


def mrope(
    position_ids: jax.Array, head_dim: int, theta: float, mrope_section: tuple[int, ...]
) -> tuple[jax.Array, jax.Array]:
    """Multimodal RoPE. position_ids: [3, batch, seq] (temporal, height, width) -> cos, sin [batch, seq, head_dim].

    Frequency j of the head_dim/2 frequencies takes its position from axis s(j), where the sections
    `mrope_section` (e.g. 16, 24, 24) assign consecutive frequency ranges to t, h, w.
    """
    inv = jnp.asarray(inv_frequencies(head_dim, theta))  # [head_dim/2]
    section_of = np.repeat(np.arange(len(mrope_section)), mrope_section)  # [head_dim/2]
    pos = position_ids.astype(jnp.float32)[section_of]  # [head_dim/2, batch, seq]
    freqs = jnp.moveaxis(pos, 0, -1) * inv  # [batch, seq, head_dim/2]
    freqs = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(freqs), jnp.sin(freqs)


def get_rope_index(
    config: ModelConfig,
    input_ids: np.ndarray,
    attention_mask: np.ndarray | None = None,
    image_grid_thw: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """3-D position ids for a prompt with images, as HF `Qwen2_5_VLModel.get_rope_index`.

    Text tokens advance all three axes together by one per token. An image of grid (t, h, w) patches spans
    (t, h/2, w/2) merged tokens placed at (start + frame, start + row, start + col); the text after it
    resumes at start + max(h, w) / 2. Padding (attention_mask == 0) is skipped and gets position 0.

    Returns position_ids [3, batch, seq] int32 and rope_deltas [batch, 1] (= max position + 1 - valid length),
    the offset that decoding adds to the plain token counter.
    """
    input_ids = np.asarray(input_ids)
    b, t = input_ids.shape
    mask = np.ones((b, t), bool) if attention_mask is None else np.asarray(attention_mask).astype(bool)
    grids = [] if image_grid_thw is None else [tuple(int(v) for v in g) for g in np.asarray(image_grid_thw)]
    m = config.vision.spatial_merge_size
    position_ids = np.zeros((3, b, t), np.int32)
    deltas = np.zeros((b, 1), np.int32)
    next_grid = 0
    for row in range(b):
        ids = input_ids[row][mask[row]]
        is_img = ids == config.image_token_id
        chunks: list[np.ndarray] = []
        cur, i, n = 0, 0, len(ids)
        while i < n:
            j = i
            while j < n and is_img[j] == is_img[i]:
                j += 1
            if not is_img[i]:
                chunks.append(np.broadcast_to(np.arange(j - i) + cur, (3, j - i)))
                cur += j - i
            else:
                remaining = j - i
                while remaining > 0:  # a run may hold several adjacent images
                    if next_grid >= len(grids):
                        raise ValueError(
                            f"row {row}: more image tokens than image_grid_thw describes ({len(grids)} images)"
                        )
                    gt, gh, gw = grids[next_grid]
                    next_grid += 1
                    lh, lw = gh // m, gw // m
                    count = gt * lh * lw
                    if count > remaining:
                        raise ValueError(
                            f"row {row}: image {next_grid - 1} with grid {(gt, gh, gw)} needs {count} image tokens, "
                            f"found a run of {remaining}"
                        )
                    tt, hh, ww = np.meshgrid(np.arange(gt), np.arange(lh), np.arange(lw), indexing="ij")
                    chunks.append(np.stack([tt.ravel(), hh.ravel(), ww.ravel()]) + cur)
                    cur += max(gh, gw) // m
                    remaining -= count
            i = j
        pos = np.concatenate(chunks, axis=1) if chunks else np.zeros((3, 0), np.int64)
        position_ids[:, row, mask[row]] = pos
        deltas[row, 0] = (pos.max() + 1 - len(ids)) if len(ids) else 0
    if next_grid != len(grids):
        raise ValueError(f"image_grid_thw describes {len(grids)} images but the prompts hold {next_grid}")
    return position_ids, deltas
