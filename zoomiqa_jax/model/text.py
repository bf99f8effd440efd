"""The Qwen2 text decoder of Qwen2.5-VL: GQA with q/k/v bias, RMSNorm, SwiGLU, multimodal RoPE.

The attention takes an optional key/value cache so that the same layers serve training (full sequence),
prefill and one-token decoding. The cache for one layer is a pair of arrays
[batch, max_len, kv_heads, head_dim]; `cache_index` is the slot the first new token is written to.

Two execution switches act on the cache-free (training / full-sequence) forward only and leave the parameter
tree as it is: `remat` (a `jax.checkpoint` policy, see `REMAT_POLICIES`) and `scan_layers` (one `lax.scan` over
the decoder layers). They are plain attributes, hence static data of the module's graphdef.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from zoomiqa_jax.config import REMAT_POLICIES, TextConfig
from zoomiqa_jax.model.layers import Embed, GatedMLP, Linear, RMSNorm, dot_product_attention
from zoomiqa_jax.model.rope import apply_rotary, mrope


def remat_policy(name: str) -> Callable[..., bool] | None:
    """The `jax.checkpoint` policy of a `REMAT_POLICIES` name; None for "none". Raises ValueError on others."""
    if name not in REMAT_POLICIES:
        raise ValueError(f"remat must be one of {REMAT_POLICIES}, got {name!r}")
    if name == "none":
        return None
    return getattr(jax.checkpoint_policies, "nothing_saveable" if name == "full" else name)


def layer_fn(
    graphdef: nnx.GraphDef, remat: str, call: Callable[[Any, jax.Array], jax.Array]
) -> Callable[[nnx.State, jax.Array], jax.Array]:
    """`(state, x) -> call(nnx.merge(graphdef, state), x)`: one layer as a pure function of its parameters,
    wrapped in `jax.checkpoint` under the `remat` policy unless that is "none"."""

    def fn(state: nnx.State, x: jax.Array) -> jax.Array:
        return call(nnx.merge(graphdef, state), x)

    policy = remat_policy(remat)
    return fn if policy is None else jax.checkpoint(fn, policy=policy)


class LayerCache(NamedTuple):
    k: jax.Array  # [batch, max_len, kv_heads, head_dim]
    v: jax.Array


class Attention(nnx.Module):
    def __init__(self, cfg: TextConfig, *, rngs: nnx.Rngs, dtype: jnp.dtype, param_dtype: jnp.dtype) -> None:
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        hd = cfg.head_dim
        self.q_proj = Linear(cfg.hidden_size, cfg.num_attention_heads * hd, use_bias=True, axes=("embed", "q_heads"),
                             **kw)
        self.k_proj = Linear(cfg.hidden_size, cfg.num_key_value_heads * hd, use_bias=True,
                             axes=("embed", "kv_heads"), **kw)
        self.v_proj = Linear(cfg.hidden_size, cfg.num_key_value_heads * hd, use_bias=True,
                             axes=("embed", "kv_heads"), **kw)
        self.o_proj = Linear(cfg.num_attention_heads * hd, cfg.hidden_size, use_bias=False,
                             axes=("q_heads", "embed"), **kw)
        self.num_heads = cfg.num_attention_heads
        self.num_kv_heads = cfg.num_key_value_heads
        self.head_dim = hd

    def __call__(
        self,
        x: jax.Array,
        cos: jax.Array,
        sin: jax.Array,
        mask: jax.Array,
        cache: LayerCache | None = None,
        cache_index: jax.Array | None = None,
    ) -> tuple[jax.Array, LayerCache | None]:
        b, t, _ = x.shape
        q = self.q_proj(x).reshape(b, t, self.num_heads, self.head_dim)
        k = self.k_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim)
        q = apply_rotary(q, cos, sin)
        k = apply_rotary(k, cos, sin)
        if cache is not None:
            k = jax.lax.dynamic_update_slice_in_dim(cache.k, k.astype(cache.k.dtype), cache_index, axis=1)
            v = jax.lax.dynamic_update_slice_in_dim(cache.v, v.astype(cache.v.dtype), cache_index, axis=1)
            cache = LayerCache(k, v)
            k, v = k.astype(q.dtype), v.astype(q.dtype)
        out = dot_product_attention(q, k, v, mask, self.head_dim**-0.5)
        return self.o_proj(out), cache


class DecoderLayer(nnx.Module):
    def __init__(self, cfg: TextConfig, *, rngs: nnx.Rngs, dtype: jnp.dtype, param_dtype: jnp.dtype) -> None:
        kw = dict(dtype=dtype, param_dtype=param_dtype)
        self.input_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, axis_name="embed", **kw)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, axis_name="embed", **kw)
        self.self_attn = Attention(cfg, rngs=rngs, **kw)
        self.mlp = GatedMLP(cfg.hidden_size, cfg.intermediate_size, use_bias=False, axes=("embed", "mlp"),
                            rngs=rngs, **kw)

    def __call__(
        self,
        x: jax.Array,
        cos: jax.Array,
        sin: jax.Array,
        mask: jax.Array,
        cache: LayerCache | None = None,
        cache_index: jax.Array | None = None,
    ) -> tuple[jax.Array, LayerCache | None]:
        h, cache = self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, cache_index)
        x = x + h
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x, cache


class TextModel(nnx.Module):
    """Embeddings, decoder layers and the final norm (HF `Qwen2_5_VLTextModel`).

    `remat` / `scan_layers` (see `set_execution`) change how the cache-free forward runs the layers, not the
    parameters: `layers` stays an `nnx.List` of per-layer modules (`layers.<i>.` keys in checkpoints).
    """

    def __init__(
        self,
        cfg: TextConfig,
        *,
        rngs: nnx.Rngs,
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
        remat: str = "none",
        scan_layers: bool = False,
    ) -> None:
        kw = dict(dtype=dtype, param_dtype=param_dtype)
        self.embed_tokens = Embed(cfg.vocab_size, cfg.hidden_size, rngs=rngs, **kw)
        self.layers = nnx.List([DecoderLayer(cfg, rngs=rngs, **kw) for _ in range(cfg.num_hidden_layers)])
        self.norm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, axis_name="embed", **kw)
        self.cfg = cfg
        self.dtype = dtype
        self.remat = "none"
        self.scan_layers = False
        self.set_execution(remat, scan_layers)

    def set_execution(self, remat: str | None = None, scan_layers: bool | None = None) -> None:
        """Set the remat policy (one of `REMAT_POLICIES`) and/or scan-over-layers; None keeps the current one."""
        if remat is not None:
            remat_policy(remat)  # validates
            self.remat = remat
        if scan_layers is not None:
            self.scan_layers = bool(scan_layers)

    def __call__(
        self,
        embeds: jax.Array,
        position_ids: jax.Array,
        mask: jax.Array,
        cache: list[LayerCache] | None = None,
        cache_index: jax.Array | None = None,
    ) -> tuple[jax.Array, list[LayerCache] | None]:
        """embeds [batch, seq, dim]; position_ids [3, batch, seq]; mask [batch, seq, kv_len] bool.

        Without a cache and with `remat` != "none" or `scan_layers`, each layer runs as a pure function of
        (its parameter state, x) through `nnx.merge` of one layer's graphdef (all layers share it), under
        `jax.checkpoint` with the remat policy. With `scan_layers` the per-layer states are stacked on a new
        leading axis and one `jax.lax.scan` runs them, so the compiled program holds a single layer body; that
        stack is a copy made inside the traced program, the stored parameter layout stays per-layer. The cache
        (prefill / decode) path always runs the plain Python loop.
        """
        cfg = self.cfg
        cos, sin = mrope(position_ids, cfg.head_dim, cfg.rope_theta, cfg.mrope_section)
        cos, sin = cos.astype(self.dtype), sin.astype(self.dtype)
        x = embeds
        if cache is None and (self.remat != "none" or self.scan_layers):
            body = layer_fn(nnx.graphdef(self.layers[0]), self.remat, lambda layer, h: layer(h, cos, sin, mask)[0])
            states = [nnx.state(layer) for layer in self.layers]
            if self.scan_layers:
                stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)
                x, _ = jax.lax.scan(lambda h, state: (body(state, h), None), x, stacked)
            else:
                for state in states:
                    x = body(state, x)
            return self.norm(x), None
        new_cache = [] if cache is not None else None
        for i, layer in enumerate(self.layers):
            x, c = layer(x, cos, sin, mask, None if cache is None else cache[i], cache_index)
            if new_cache is not None:
                new_cache.append(c)
        return self.norm(x), new_cache
