"""The Qwen2.5-VL vision tower: patch embedding, window/full attention blocks with 2-D RoPE, 2x2 patch merger.

All patches of all images form one sequence [num_patches, dim] (no batch axis), as in the reference. Which
patches may attend to which is given by integer segment ids computed on the host by `vision_metadata`:
one segment per image (frame) for the full-attention blocks, one per window for the others. Patches are
processed in window order (each window's merged tokens contiguous) and put back in raster order after
the merger.

`remat` (a `REMAT_POLICIES` name) rematerialises each block under that `jax.checkpoint` policy. There is no
scan over the blocks: those at `fullatt_block_indexes` attend within images, the others within windows (other
segments, another attention path), so the blocks are not one repeated body.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from zoomiqa_jax.config import VisionConfig
from zoomiqa_jax.model.layers import GatedMLP, Linear, RMSNorm, dot_product_attention
from zoomiqa_jax.model.rope import apply_rotary, vision_rope
from zoomiqa_jax.model.text import layer_fn, remat_policy


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class VisionMeta:
    """Host-computed integer arrays that describe a set of images to the vision tower (a pytree).

    window_index:  [n_merged] raster merged-token index placed at each window-order slot.
    reverse_index: [n_merged] window-order slot of each raster merged token (argsort of window_index).
    positions:     [n_patches, 2] (row, col) of each patch, in window order.
    image_segment: [n_patches] image (frame) id of each patch, in window order.
    window_segment:[n_patches] window id of each patch, in window order.
    full_chunk:    static: an upper bound on one image's patch count (a multiple of 64), or None. With several
                   images, full attention then runs per image in chunks (O(n x chunk)) instead of over all
                   n patches at once (O(n^2)); None or a single chunk-sized image means dense attention.
    """

    window_index: np.ndarray
    reverse_index: np.ndarray
    positions: np.ndarray
    image_segment: np.ndarray
    window_segment: np.ndarray
    full_chunk: int | None = dataclasses.field(default=None, metadata=dict(static=True))


def vision_metadata(grid_thw: np.ndarray, config: VisionConfig) -> VisionMeta:
    """Window order, RoPE positions and attention segments for images of the given (t, h, w) patch grids.

    Mirrors the reference: merged tokens (m x m patches, m = spatial_merge_size) are grouped in square
    windows of `window_size / patch_size / m` merged tokens per side, scanned row-major; partial windows at
    the right/bottom edge keep only the tokens that exist. Patch positions within an image are laid out
    block-major over the m x m merge blocks.
    """
    m = config.spatial_merge_size
    unit = m * m
    ws = config.merger_window
    window_index, positions, image_seg, window_seg = [], [], [], []
    offset = 0
    n_windows = 0
    n_frames = 0
    for t, h, w in np.asarray(grid_thw, dtype=np.int64).reshape(-1, 3).tolist():
        if h % m or w % m:
            raise ValueError(f"grid {(t, h, w)}: height and width must be multiples of spatial_merge_size {m}")
        lh, lw = h // m, w // m
        # Patch (row, col) positions, raster over merge blocks, each block's m x m patches contiguous.
        rows = np.arange(h).reshape(lh, m, 1, 1).repeat(lw, 2).repeat(m, 3)
        cols = np.arange(w).reshape(1, 1, lw, m).repeat(lh, 0).repeat(m, 1)
        pos = np.stack([rows.transpose(0, 2, 1, 3).ravel(), cols.transpose(0, 2, 1, 3).ravel()], -1)
        pos = np.tile(pos, (t, 1)).reshape(t * lh * lw, unit, 2)
        # Window order of the merged tokens of each frame.
        nh, nw = -(-lh // ws), -(-lw // ws)
        wr = np.arange(lh)[:, None] // ws
        wc = np.arange(lw)[None, :] // ws
        win_of = (wr * nw + wc).ravel()  # window id of each raster merged token
        order = np.argsort(win_of, kind="stable")  # raster tokens sorted by window, row-major within
        for f in range(t):
            idx = order + offset + f * lh * lw
            window_index.append(idx)
            window_seg.append(np.repeat(win_of[order] + n_windows, unit))
            image_seg.append(np.full(lh * lw * unit, n_frames))
            n_windows += nh * nw
            n_frames += 1
        positions.append(pos)
        offset += t * lh * lw
    window_index_arr = np.concatenate(window_index).astype(np.int32)
    positions_arr = np.concatenate(positions)[window_index_arr].reshape(-1, 2).astype(np.int32)
    longest = max((t * h * w for t, h, w in np.asarray(grid_thw, dtype=np.int64).reshape(-1, 3).tolist()), default=0)
    return VisionMeta(
        full_chunk=-(-int(longest) // 64) * 64 if len(image_seg) > 1 else None,
        window_index=window_index_arr,
        reverse_index=np.argsort(window_index_arr).astype(np.int32),
        positions=positions_arr,
        image_segment=np.concatenate(image_seg).astype(np.int32),
        window_segment=np.concatenate(window_seg).astype(np.int32),
    )


def local_segment_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, segment: jax.Array, chunk: int, scale: float
) -> jax.Array:
    """Attention within segments that are contiguous and at most `chunk` long (the windows, in window order).

    q, k, v: [n, heads, head_dim]; segment: [n]. The sequence is cut into chunks of `chunk` tokens and each chunk
    attends to itself and its two neighbours (3 x chunk keys), masked to its own segment: every window-mate of a
    token lies within that span, so the result equals dense masked attention at O(n x chunk) instead of O(n^2),
    with shapes that depend on n alone (one compile per patch bucket, whatever the image grid).
    Returns [n, heads * head_dim].
    """
    n, h, d = q.shape
    pad = (-n) % chunk
    nc = (n + pad) // chunk
    grow = lambda x, fill: jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1), constant_values=fill)
    # padding tokens get segment -2 (they attend to each other); missing neighbour chunks at the ends get -3
    seg = grow(segment, -2).reshape(nc, chunk)

    def neighbours(x: jax.Array, fill: int | float) -> jax.Array:  # [nc, chunk, ...] -> [nc, 3 * chunk, ...]
        xp = jnp.pad(x, [(1, 1)] + [(0, 0)] * (x.ndim - 1), constant_values=fill)
        return jnp.concatenate([xp[:-2], xp[1:-1], xp[2:]], axis=1)

    kc = neighbours(grow(k, 0).reshape(nc, chunk, h, d), 0)
    vc = neighbours(grow(v, 0).reshape(nc, chunk, h, d), 0)
    mask = seg[:, :, None] == neighbours(seg, -3)[:, None, :]
    out = dot_product_attention(grow(q, 0).reshape(nc, chunk, h, d), kc, vc, mask, scale)
    return out.reshape(nc * chunk, h * d)[:n]


class VisionAttention(nnx.Module):
    def __init__(self, cfg: VisionConfig, *, rngs: nnx.Rngs, dtype: jnp.dtype, param_dtype: jnp.dtype) -> None:
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.qkv = Linear(cfg.hidden_size, 3 * cfg.hidden_size, use_bias=True, axes=("vit_embed", "vit_qkv"), **kw)
        self.proj = Linear(cfg.hidden_size, cfg.hidden_size, use_bias=True, axes=("vit_heads", "vit_embed"), **kw)
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.head_dim

    def __call__(
        self, x: jax.Array, cos: jax.Array, sin: jax.Array, segment: jax.Array, window: int | None
    ) -> jax.Array:
        """`segment` [n]: tokens attend within their segment. `window`: None for full attention (segments are
        images, dense mask), else the longest window in tokens (segments are windows, local attention)."""
        n = x.shape[0]
        qkv = self.qkv(x).reshape(n, 3, self.num_heads, self.head_dim)
        q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]  # [n, heads, head_dim]
        q = apply_rotary(q.astype(jnp.float32), cos, sin).astype(x.dtype)
        k = apply_rotary(k.astype(jnp.float32), cos, sin).astype(x.dtype)
        scale = self.head_dim**-0.5
        if window is None:
            mask = segment[:, None] == segment[None, :]
            out = dot_product_attention(q[None], k[None], v[None], mask[None], scale)[0]
        else:
            out = local_segment_attention(q, k, v, segment, window, scale)
        return self.proj(out)


class VisionBlock(nnx.Module):
    def __init__(self, cfg: VisionConfig, *, rngs: nnx.Rngs, dtype: jnp.dtype, param_dtype: jnp.dtype) -> None:
        kw = dict(dtype=dtype, param_dtype=param_dtype)
        self.norm1 = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, axis_name="vit_embed", **kw)
        self.norm2 = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, axis_name="vit_embed", **kw)
        self.attn = VisionAttention(cfg, rngs=rngs, **kw)
        self.mlp = GatedMLP(
            cfg.hidden_size, cfg.intermediate_size, use_bias=True, axes=("vit_embed", "vit_mlp"), rngs=rngs, **kw
        )

    def __call__(
        self, x: jax.Array, cos: jax.Array, sin: jax.Array, segment: jax.Array, window: int | None
    ) -> jax.Array:
        x = x + self.attn(self.norm1(x), cos, sin, segment, window)
        return x + self.mlp(self.norm2(x))


class PatchMerger(nnx.Module):
    """RMSNorm, then each m x m block of patches (contiguous) -> one token: Linear, GELU, Linear."""

    def __init__(self, cfg: VisionConfig, *, rngs: nnx.Rngs, dtype: jnp.dtype, param_dtype: jnp.dtype) -> None:
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        wide = cfg.hidden_size * cfg.merge_unit
        self.ln_q = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, axis_name="vit_embed", dtype=dtype,
                            param_dtype=param_dtype)
        self.fc1 = Linear(wide, wide, use_bias=True, axes=("vit_merge", "vit_merge_out"), **kw)
        self.fc2 = Linear(wide, cfg.out_hidden_size, use_bias=True, axes=("vit_merge_out", "embed"), **kw)
        self.wide = wide

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.ln_q(x).reshape(-1, self.wide)
        return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))


class VisionTower(nnx.Module):
    """pixel_values [n_patches, C*T*P*P] -> image features [n_patches / m^2, out_hidden_size], raster order.

    With `remat` != "none" each block runs as a pure function of its parameter state (`nnx.merge` of one
    block's graphdef) under `jax.checkpoint`; the blocks stay an `nnx.List` (`blocks.<i>.` keys). Not scanned:
    see the module docstring.
    """

    def __init__(
        self,
        cfg: VisionConfig,
        *,
        rngs: nnx.Rngs,
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
        remat: str = "none",
    ) -> None:
        remat_policy(remat)  # validates
        kw = dict(dtype=dtype, param_dtype=param_dtype)
        # The reference's Conv3d with stride == kernel is a matmul over flattened (C, T, P, P) patches.
        self.patch_embed = Linear(
            cfg.patch_dim, cfg.hidden_size, use_bias=False, axes=("vit_patch", "vit_embed"), rngs=rngs, **kw
        )
        self.blocks = nnx.List([VisionBlock(cfg, rngs=rngs, **kw) for _ in range(cfg.depth)])
        self.merger = PatchMerger(cfg, rngs=rngs, **kw)
        self.cfg = cfg
        self.dtype = dtype
        self.remat = remat

    def __call__(self, pixel_values: jax.Array, meta: VisionMeta) -> jax.Array:
        cfg = self.cfg
        unit = cfg.merge_unit
        x = self.patch_embed(pixel_values.astype(self.dtype))
        n, d = x.shape
        x = x.reshape(n // unit, unit, d)[jnp.asarray(meta.window_index)].reshape(n, d)
        cos, sin = vision_rope(jnp.asarray(meta.positions), cfg.head_dim, cfg.rope_theta)
        img = jnp.asarray(meta.image_segment)
        win = jnp.asarray(meta.window_segment)
        window_len = cfg.merger_window**2 * unit  # the longest window, in patches
        # full attention: per image in chunks when that beats one dense n x n over all images
        image_len = meta.full_chunk if meta.full_chunk is not None and n > 3 * meta.full_chunk else None
        full = set(cfg.fullatt_block_indexes)
        if self.remat == "none":
            for i, block in enumerate(self.blocks):
                x = block(x, cos, sin, img, image_len) if i in full else block(x, cos, sin, win, window_len)
        else:
            graphdef = nnx.graphdef(self.blocks[0])
            full_fn = layer_fn(graphdef, self.remat, lambda block, h: block(h, cos, sin, img, image_len))
            window_fn = layer_fn(graphdef, self.remat, lambda block, h: block(h, cos, sin, win, window_len))
            for i, block in enumerate(self.blocks):
                x = (full_fn if i in full else window_fn)(nnx.state(block), x)
        merged = self.merger(x)
        return merged[jnp.asarray(meta.reverse_index)]
