"""Prefill + KV-cache decoding, jitted end to end, with static shape buckets and shared-prefix group sampling.

One call of `generate` runs one compiled program: encode the images, prefill the (left-padded) prompts into a
KV cache of `prompt_bucket + new_tokens_bucket` slots, optionally copy each prompt's cache to `group` rows,
then a `lax.while_loop` that feeds one token per step until every row has stopped or the budget is spent.

Shapes are padded to buckets (prompt length, image patches, new tokens), so a run over many image sizes
compiles a handful of programs; `compile_count()` reports how many. Every row draws its randomness from its
own key (`fold_in(row_key, step)`), so a row's tokens do not depend on what else is in the batch: sampling G
rows after one shared prefill equals G separate prefills with the same row keys.

Positions follow transformers' `generate`: prompt tokens get M-RoPE ids from `get_rope_index` (padding
skipped), generated token i sits at max prompt position + 1 + i.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from zoomiqa_jax.inference.sampling import choose_tokens
from zoomiqa_jax.model import LayerCache, Qwen25VL, VisionMeta, get_rope_index, vision_metadata


@dataclasses.dataclass(frozen=True)
class Buckets:
    """Static sizes that inputs are padded up to. A value above the largest bucket is rounded up to a
    multiple of that bucket (so still a bounded set of shapes)."""

    prompt_lengths: tuple[int, ...] = (64, 128, 192, 256, 320, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)
    patch_counts: tuple[int, ...] = (256, 1024, 2048, 4096, 8192, 16384)
    new_tokens: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 1024)

    @staticmethod
    def pick(value: int, options: Sequence[int]) -> int:
        for o in sorted(options):
            if value <= o:
                return o
        top = max(options)
        return -(-value // top) * top


class GenerateOutput(NamedTuple):
    tokens: np.ndarray  # [rows, max_new_tokens] int32; after a row stops: pad_token_id
    logprobs: np.ndarray  # [rows, max_new_tokens] float32 log p(token) under the model; 0 after the stop
    lengths: np.ndarray  # [rows] generated tokens including the stop token


_COMPILES: dict[str, int] = {"generate": 0}


def compile_count() -> int:
    """How many times the generation program has been traced (= compiled) in this process."""
    return _COMPILES["generate"]


def pad_vision_meta(meta: VisionMeta, n_patches: int, unit: int, full_chunk: int | None = None) -> VisionMeta:
    """Extend the metadata to `n_patches` (padding patches attend only to each other and land last).

    `full_chunk` replaces the metadata's per-image bound with a bucketed one (or None for dense attention),
    so that it does not add a compile per image size."""
    n = len(meta.positions)
    if n_patches < n or (n_patches - n) % unit:
        raise ValueError(f"cannot pad {n} patches to {n_patches} (must grow by a multiple of {unit})")
    extra = n_patches - n
    wi = np.concatenate([meta.window_index, np.arange(n // unit, n_patches // unit, dtype=np.int32)])
    return VisionMeta(
        full_chunk=full_chunk,
        window_index=wi,
        reverse_index=np.argsort(wi).astype(np.int32),
        positions=np.concatenate([meta.positions, np.zeros((extra, 2), np.int32)]),
        image_segment=np.concatenate([meta.image_segment, np.full(extra, -1, np.int32)]),
        window_segment=np.concatenate([meta.window_segment, np.full(extra, -1, np.int32)]),
    )


@partial(jax.jit, static_argnames=("graphdef", "max_new", "greedy", "group", "top_k"))
def _generate_program(
    graphdef: Any,
    state: Any,
    ids: jax.Array,  # [batch, prompt] left-padded
    mask: jax.Array,  # [batch, prompt]
    pixels: jax.Array | None,  # [patches, patch_dim]
    meta: VisionMeta | None,
    position_ids: jax.Array,  # [3, batch, prompt]
    next_pos: jax.Array,  # [batch] position of the first generated token
    row_keys: jax.Array,  # [batch * group] PRNG keys
    eos_ids: jax.Array,  # [n_eos]
    pad_id: jax.Array,
    limit: jax.Array,  # requested new tokens (<= max_new): the loop stops there, not at the bucket
    temperature: jax.Array,
    top_k: int,
    top_p: jax.Array,
    *,
    max_new: int,
    greedy: bool,
    group: int,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    _COMPILES["generate"] += 1  # runs at trace time only
    model: Qwen25VL = nnx.merge(graphdef, state)
    b, t = ids.shape
    total = t + max_new
    text = model.config.text
    dtype = model.dtype
    embeds = model.embed(ids, pixels, meta)
    cache = [
        LayerCache(
            jnp.zeros((b, total, text.num_key_value_heads, text.head_dim), dtype),
            jnp.zeros((b, total, text.num_key_value_heads, text.head_dim), dtype),
        )
        for _ in range(text.num_hidden_layers)
    ]
    kv_mask = jnp.concatenate([mask.astype(bool), jnp.zeros((b, max_new), bool)], axis=1)
    causal = jnp.arange(t)[:, None] >= jnp.arange(total)[None, :]
    prefill_mask = causal[None] & kv_mask[:, None, :]
    logits, cache = model.decode(embeds, position_ids, prefill_mask, cache, jnp.int32(0), last_only=True)
    last = logits[:, -1]  # [batch, vocab]
    if group > 1:  # share the prefix: copy each prompt's cache and last logits to its group rows
        rep = lambda x: jnp.repeat(x, group, axis=0)
        cache = [LayerCache(rep(c.k), rep(c.v)) for c in cache]
        last, kv_mask, next_pos = rep(last), rep(kv_mask), rep(next_pos)
        b = b * group
    sample = partial(choose_tokens, greedy=greedy, temperature=temperature, top_k=top_k, top_p=top_p)
    step_keys = lambda step: jax.vmap(jax.random.fold_in, in_axes=(0, None))(row_keys, step)
    tok, logp = sample(last, step_keys(0))
    done = jnp.isin(tok, eos_ids)
    tokens = jnp.full((b, max_new), pad_id, jnp.int32).at[:, 0].set(tok)
    logps = jnp.zeros((b, max_new), jnp.float32).at[:, 0].set(logp)
    lengths = jnp.ones((b,), jnp.int32)

    def cond(carry: tuple) -> jax.Array:
        step, _, _, _, _, done, _, _ = carry
        return (step < limit) & ~jnp.all(done)

    def body(carry: tuple) -> tuple:
        step, tok, cache, kv_mask, tokens, done, logps, lengths = carry
        slot = t + step - 1  # cache slot of the token being fed
        kv_mask = kv_mask.at[:, slot].set(True)
        pos = jnp.broadcast_to((next_pos + step - 1)[None, :, None], (3, b, 1))
        x = model.language_model.embed_tokens(tok[:, None])
        logits, cache = model.decode(x, pos, kv_mask[:, None, :], cache, slot)
        new_tok, new_logp = sample(logits[:, 0], step_keys(step))
        new_tok = jnp.where(done, pad_id, new_tok)
        new_logp = jnp.where(done, 0.0, new_logp)
        tokens = tokens.at[:, step].set(new_tok)
        logps = logps.at[:, step].set(new_logp)
        lengths = lengths + (~done).astype(jnp.int32)
        done = done | jnp.isin(new_tok, eos_ids)
        return step + 1, new_tok, cache, kv_mask, tokens, done, logps, lengths

    carry = (jnp.int32(1), tok, cache, kv_mask, tokens, done, logps, lengths)
    _, _, _, _, tokens, _, logps, lengths = jax.lax.while_loop(cond, body, carry)
    return tokens, logps, lengths


def generate(
    model: Qwen25VL,
    input_ids: Any,
    attention_mask: Any | None = None,
    pixel_values: Any | None = None,
    image_grid_thw: Any | None = None,
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int = 0,
    eos_token_ids: Sequence[int] | None = None,
    pad_token_id: int | None = None,
    rng: jax.Array | None = None,
    group: int = 1,
    row_keys: jax.Array | None = None,
    buckets: Buckets | None = None,
) -> GenerateOutput:
    """Generate up to `max_new_tokens` per row (HF input meaning; prompts left-padded).

    temperature 0 is greedy. With `group` G > 1 each prompt is prefilled once and sampled G times (rows
    ordered prompt-major: prompt 0's G samples, then prompt 1's ...). Row randomness comes from `row_keys`
    ([rows] keys) or, by default, `jax.random.split(rng, rows)`.
    """
    cfg = model.config
    ids = np.asarray(input_ids)
    if ids.ndim != 2:
        raise ValueError(f"input_ids must be [batch, seq], got shape {ids.shape}")
    mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask)
    if mask.shape != ids.shape:
        raise ValueError(f"attention_mask shape {mask.shape} != input_ids shape {ids.shape}")
    if (mask[:, -1] == 0).any():
        raise ValueError("prompts must be left-padded (attention_mask[:, -1] must be 1 for every row)")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    buckets = buckets or Buckets()
    eos = tuple(eos_token_ids) if eos_token_ids is not None else (cfg.eos_token_id, cfg.bos_token_id)
    if pad_token_id is not None:
        pad = pad_token_id
    else:  # no stop tokens (fixed-length sampling) still needs a filler id
        pad = eos[0] if eos else cfg.eos_token_id
    b, t = ids.shape
    tb = Buckets.pick(t, buckets.prompt_lengths)
    ids = np.concatenate([np.full((b, tb - t), pad, ids.dtype), ids], axis=1)
    mask = np.concatenate([np.zeros((b, tb - t), mask.dtype), mask], axis=1)
    grid = None if image_grid_thw is None else np.asarray(image_grid_thw, np.int64).reshape(-1, 3)
    position_ids, deltas = get_rope_index(cfg, ids, mask, grid)
    next_pos = mask.sum(-1) + deltas[:, 0]
    pixels = meta = None
    if grid is not None:
        if pixel_values is None:
            raise ValueError("image_grid_thw given without pixel_values")
        pv = np.asarray(pixel_values, np.float32)
        nb = Buckets.pick(len(pv), buckets.patch_counts)
        pixels = np.concatenate([pv, np.zeros((nb - len(pv), pv.shape[1]), np.float32)])
        longest = int(grid.prod(-1).max())
        chunk = Buckets.pick(longest, buckets.patch_counts)
        meta = pad_vision_meta(vision_metadata(grid, cfg.vision), nb, cfg.vision.merge_unit,
                               full_chunk=chunk if nb > 3 * chunk else None)
    new_b = Buckets.pick(max_new_tokens, buckets.new_tokens)
    rows = b * group
    if row_keys is None:
        row_keys = jax.random.split(jax.random.key(0) if rng is None else rng, rows)
    if len(row_keys) != rows:
        raise ValueError(f"row_keys holds {len(row_keys)} keys for {rows} rows")
    graphdef, state = nnx.split(model)
    tokens, logps, lengths = _generate_program(
        graphdef, state, jnp.asarray(ids, jnp.int32), jnp.asarray(mask, jnp.int32),
        None if pixels is None else jnp.asarray(pixels), None if meta is None else jax.tree.map(jnp.asarray, meta),
        jnp.asarray(position_ids), jnp.asarray(next_pos, jnp.int32), row_keys, jnp.asarray(eos, jnp.int32),
        jnp.int32(pad), jnp.int32(max_new_tokens), jnp.float32(max(temperature, 1e-6)), int(top_k),
        jnp.float32(top_p),
        max_new=new_b, greedy=temperature <= 0.0, group=group,
    )
    n = max_new_tokens
    lengths = np.minimum(np.asarray(lengths), n)
    return GenerateOutput(np.asarray(tokens)[:, :n], np.asarray(logps)[:, :n], lengths)
