"""Qwen2.5-VL for conditional generation in Flax NNX (HF `Qwen2_5_VLForConditionalGeneration`).

    logits = lm_head(decoder(scatter(embed(input_ids), vision(pixel_values)), mrope(position_ids)))

Everything that depends on the *values* of `image_grid_thw` or on where image tokens sit (window order,
RoPE positions, attention segments) is computed on the host by `prepare_inputs`; the forward itself is a
pure function of fixed-shape arrays and can be jitted. Calling the model eagerly with `image_grid_thw`
does the preparation for you.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from zoomiqa_jax.config import ModelConfig
from zoomiqa_jax.model.layers import Linear
from zoomiqa_jax.model.rope import get_rope_index
from zoomiqa_jax.model.text import LayerCache, TextModel, remat_policy
from zoomiqa_jax.model.vision import VisionMeta, VisionTower, vision_metadata


def prepare_inputs(
    config: ModelConfig,
    input_ids: Any,
    attention_mask: Any | None = None,
    image_grid_thw: Any | None = None,
) -> dict[str, Any]:
    """Host-side (NumPy) inputs of the jittable forward.

    Returns `position_ids` [3, batch, seq], `rope_deltas` [batch, 1] and, with images, `vision_meta`.
    Without images the positions are 0..seq-1 on all three axes (as the reference's forward does, left
    padding included).
    """
    input_ids = np.asarray(input_ids)
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be [batch, seq], got shape {input_ids.shape}")
    b, t = input_ids.shape
    n_img_tokens = int((input_ids == config.image_token_id).sum())
    if image_grid_thw is None:
        if n_img_tokens:
            raise ValueError(f"input_ids hold {n_img_tokens} image tokens but no image_grid_thw was given")
        position_ids = np.broadcast_to(np.arange(t, dtype=np.int32), (3, b, t)).copy()
        return {"position_ids": position_ids, "rope_deltas": np.zeros((b, 1), np.int32), "vision_meta": None}
    grid = np.asarray(image_grid_thw, dtype=np.int64).reshape(-1, 3)
    expected = int((grid.prod(-1) // config.vision.merge_unit).sum())
    if expected != n_img_tokens:
        raise ValueError(
            f"image features and image tokens do not match: image_grid_thw gives {expected} tokens, "
            f"input_ids hold {n_img_tokens}"
        )
    position_ids, deltas = get_rope_index(config, input_ids, attention_mask, grid)
    return {"position_ids": position_ids, "rope_deltas": deltas, "vision_meta": vision_metadata(grid, config.vision)}


def causal_mask(attention_mask: jax.Array, q_len: int, kv_len: int, q_offset: jax.Array | int = 0) -> jax.Array:
    """[batch, q_len, kv_len] bool: query i (at absolute slot q_offset + i) sees valid keys j <= its slot."""
    q_pos = jnp.arange(q_len)[:, None] + q_offset
    k_pos = jnp.arange(kv_len)[None, :]
    return (k_pos <= q_pos)[None] & attention_mask[:, None, :kv_len].astype(bool)


class Qwen25VL(nnx.Module):
    """The full model. `visual`, `language_model`, `lm_head` mirror the HF module names.

    `remat` (one of `REMAT_POLICIES`) rematerialises the decoder layers and the vision blocks; `scan_layers`
    runs the decoder layers under one `jax.lax.scan`. Both act on the cache-free forward only, leave the
    parameter tree unchanged and can be switched on a built or loaded model with `set_execution`.
    """

    def __init__(
        self,
        config: ModelConfig,
        *,
        rngs: nnx.Rngs,
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
        remat: str = "none",
        scan_layers: bool = False,
    ) -> None:
        dtype, param_dtype = jnp.dtype(dtype), jnp.dtype(param_dtype)  # accept "bfloat16" and friends
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.config = config
        self.visual = VisionTower(config.vision, remat=remat, **kw)
        self.language_model = TextModel(config.text, remat=remat, scan_layers=scan_layers, **kw)
        t = config.text
        self.lm_head = (
            None
            if config.tie_word_embeddings
            else Linear(t.hidden_size, t.vocab_size, use_bias=False, axes=("embed", "vocab"), **kw)
        )
        self.dtype = dtype

    def set_execution(self, remat: str | None = None, scan_layers: bool | None = None) -> None:
        """Switch remat (one of `REMAT_POLICIES`) and/or scan-over-layers; None keeps the current setting.

        Call it outside any trace: the settings are static graphdef data, so a jitted step retraces for them."""
        if remat is not None:
            remat_policy(remat)  # validate before changing anything
            self.visual.remat = remat
        self.language_model.set_execution(remat, scan_layers)

    # ------------------------------------------------------------------ pieces
    def embed(
        self, input_ids: jax.Array, pixel_values: jax.Array | None = None, vision_meta: VisionMeta | None = None
    ) -> jax.Array:
        """Token embeddings with the image features scattered, in order, into the image-token slots."""
        x = self.language_model.embed_tokens(input_ids)
        if pixel_values is None:
            return x
        feats = self.visual(pixel_values, vision_meta).astype(x.dtype)  # [n_merged, dim]
        is_img = (input_ids == self.config.image_token_id).reshape(-1)
        slot = jnp.clip(jnp.cumsum(is_img) - 1, 0, feats.shape[0] - 1)
        flat = jnp.where(is_img[:, None], feats[slot], x.reshape(-1, x.shape[-1]))
        return flat.reshape(x.shape)

    def logits(self, hidden: jax.Array) -> jax.Array:
        if self.lm_head is None:
            return self.language_model.embed_tokens.attend(hidden)
        return self.lm_head(hidden)

    def decode(
        self,
        embeds: jax.Array,
        position_ids: jax.Array,
        mask: jax.Array,
        cache: list[LayerCache] | None = None,
        cache_index: jax.Array | None = None,
        *,
        last_only: bool = False,
    ) -> tuple[jax.Array, list[LayerCache] | None]:
        """Decoder + lm_head on given embeddings: logits [batch, seq, vocab] and the updated cache.

        `last_only` projects only the last position ([batch, 1, vocab]): a prefill needs nothing else, and the
        vocabulary projection of every prompt position would be most of its FLOPs."""
        hidden, cache = self.language_model(embeds, position_ids, mask, cache, cache_index)
        return self.logits(hidden[:, -1:] if last_only else hidden), cache

    # ------------------------------------------------------------------ forward
    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array | None = None,
        pixel_values: jax.Array | None = None,
        image_grid_thw: Any | None = None,
        *,
        position_ids: jax.Array | None = None,
        vision_meta: VisionMeta | None = None,
    ) -> jax.Array:
        """HF-style forward: logits [batch, seq, vocab].

        Eagerly, pass `image_grid_thw` and the host-side inputs are derived. Under `jax.jit`, pass
        `position_ids` and `vision_meta` from `prepare_inputs` instead (image_grid_thw is then ignored).
        """
        b, t = input_ids.shape
        if attention_mask is None:
            attention_mask = jnp.ones((b, t), jnp.int32)
        if position_ids is None:
            prep = prepare_inputs(self.config, np.asarray(input_ids), np.asarray(attention_mask), image_grid_thw)
            position_ids, vision_meta = prep["position_ids"], prep["vision_meta"]
        if pixel_values is not None and vision_meta is None:
            raise ValueError("pixel_values given without image_grid_thw / vision_meta")
        embeds = self.embed(input_ids, pixel_values, vision_meta)
        logits, _ = self.decode(embeds, jnp.asarray(position_ids), causal_mask(jnp.asarray(attention_mask), t, t))
        return logits
