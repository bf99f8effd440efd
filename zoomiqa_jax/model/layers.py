"""Basic layers with explicit dtypes and logical axis names.

Every parameter is an `nnx.Param` carrying `logical_axes`: a tuple of names, one per dimension, that the
parallel layer maps to mesh axes by rules (`zoomiqa_jax.parallel`). Layers hold no sharding logic.

Dtype policy: parameters are stored in `param_dtype`; the forward casts them to the compute `dtype`.
Layer names (`kernel`, `bias`, `weight`, `embedding`) are the ones the HF key map in
`zoomiqa_jax.checkpoint.keymap` points at.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

Axes = tuple[str | None, ...]


def _init_normal(rngs: nnx.Rngs, shape: tuple[int, ...], dtype: jnp.dtype, std: float = 0.02) -> jax.Array:
    return (std * jax.random.normal(rngs.params(), shape, jnp.float32)).astype(dtype)


class Linear(nnx.Module):
    """y = x @ kernel + bias, kernel stored [in, out] (the transpose of torch's `weight`)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        use_bias: bool,
        axes: Axes,
        rngs: nnx.Rngs,
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
    ) -> None:
        self.kernel = nnx.Param(
            _init_normal(rngs, (in_features, out_features), param_dtype), logical_axes=tuple(axes)
        )
        self.bias = (
            nnx.Param(jnp.zeros((out_features,), param_dtype), logical_axes=(axes[-1],)) if use_bias else None
        )
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        y = jnp.dot(x.astype(self.dtype), self.kernel[...].astype(self.dtype))
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        return y


class RMSNorm(nnx.Module):
    """weight * x / sqrt(mean(x^2) + eps), the statistic in float32 (as HF `Qwen2_5_VLRMSNorm`)."""

    def __init__(
        self,
        dim: int,
        *,
        eps: float,
        axis_name: str,
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
    ) -> None:
        self.weight = nnx.Param(jnp.ones((dim,), param_dtype), logical_axes=(axis_name,))
        self.eps = eps
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        var = jnp.mean(x32 * x32, axis=-1, keepdims=True)
        normed = (x32 * jax.lax.rsqrt(var + self.eps)).astype(self.dtype)
        return self.weight[...].astype(self.dtype) * normed


class Embed(nnx.Module):
    """Token embedding table [vocab, embed]; `attend` is the tied output projection."""

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        *,
        rngs: nnx.Rngs,
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
    ) -> None:
        self.embedding = nnx.Param(_init_normal(rngs, (vocab_size, dim), param_dtype), logical_axes=("vocab", "embed"))
        self.dtype = dtype

    def __call__(self, ids: jax.Array) -> jax.Array:
        return jnp.take(self.embedding[...], ids, axis=0).astype(self.dtype)

    def attend(self, x: jax.Array) -> jax.Array:
        return jnp.dot(x.astype(self.dtype), self.embedding[...].astype(self.dtype).T)


class GatedMLP(nnx.Module):
    """down(silu(gate(x)) * up(x)): the SwiGLU MLP of both towers (the vision one has biases)."""

    def __init__(
        self,
        dim: int,
        hidden: int,
        *,
        use_bias: bool,
        axes: tuple[str, str],
        rngs: nnx.Rngs,
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
    ) -> None:
        embed, mlp = axes
        kw = dict(use_bias=use_bias, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.gate_proj = Linear(dim, hidden, axes=(embed, mlp), **kw)
        self.up_proj = Linear(dim, hidden, axes=(embed, mlp), **kw)
        self.down_proj = Linear(hidden, dim, axes=(mlp, embed), **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


def dot_product_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, scale: float
) -> jax.Array:
    """Grouped-query attention with an explicit boolean mask; softmax in float32.

    q: [batch, q_len, q_heads, head_dim]; k, v: [batch, kv_len, kv_heads, head_dim];
    mask: [batch, q_len, kv_len] (True = attend). Returns [batch, q_len, q_heads * head_dim].
    Rows with nothing to attend to (left padding) produce finite garbage, never NaN.
    """
    b, t, hq, d = q.shape
    hkv = k.shape[2]
    qg = q.reshape(b, t, hkv, hq // hkv, d)
    scores = jnp.einsum("btkgd,bskd->bkgts", qg, k) * jnp.asarray(scale, q.dtype)
    scores = scores.astype(jnp.float32)
    scores = jnp.where(mask[:, None, None, :, :], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v)
    return out.reshape(b, t, hq * d)
