"""The PyTorch reference: tiny random transformers Qwen2.5-VL models and our copies of them."""

from __future__ import annotations

import numpy as np
import torch

from zoomiqa_jax.checkpoint.state import model_from_hf_tensors
from zoomiqa_jax.config import ModelConfig


def make_hf_model(cfg: ModelConfig, seed: int = 0, scale: float = 0.1):
    """A float32 transformers model of `cfg` with every tensor random (norm weights near 1, biases non-zero),
    so that a wrong key, transpose or bias shows up in the logits. `scale` is the std of the other weights
    (larger gives peakier, less repetitive greedy generations)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    hf_cfg = Qwen2_5_VLConfig(**cfg.to_hf_dict(torch_dtype="float32"))
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration._from_config(hf_cfg, attn_implementation="eager")
    model = model.float().eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1.0 + 0.05 * noise if "norm" in name or "ln_q" in name else scale * noise)
    return model


def hf_state_numpy(model) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def ours_from_hf(model, cfg: ModelConfig, **kw):
    return model_from_hf_tensors(cfg, hf_state_numpy(model), **kw)


def image_prompt(cfg: ModelConfig, grids, text_ids) -> list[int]:
    """text ids, then for each grid <vision_start> <image>*n <vision_end> <text>, as the chat template lays it."""
    ids = list(text_ids)
    m2 = cfg.vision.spatial_merge_size**2
    for t, h, w in grids:
        ids += [cfg.vision_start_token_id] + [cfg.image_token_id] * (t * h * w // m2) + [cfg.vision_end_token_id]
        ids += [7, 8, 9]
    return ids


def left_pad(rows: list[list[int]], pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    n = max(len(r) for r in rows)
    ids = np.full((len(rows), n), pad_id, np.int64)
    mask = np.zeros((len(rows), n), np.int64)
    for i, r in enumerate(rows):
        ids[i, n - len(r):] = r
        mask[i, n - len(r):] = 1
    return ids, mask


def random_pixels(cfg: ModelConfig, grids, seed: int = 0) -> np.ndarray:
    n = int(sum(t * h * w for t, h, w in grids))
    return np.random.default_rng(seed).standard_normal((n, cfg.vision.patch_dim)).astype(np.float32)


def hf_logits(model, cfg: ModelConfig, ids, mask, pixels=None, grids=None) -> np.ndarray:
    kw = {}
    if pixels is not None:
        kw = dict(
            pixel_values=torch.from_numpy(pixels),
            image_grid_thw=torch.tensor(np.asarray(grids), dtype=torch.long),
            mm_token_type_ids=torch.from_numpy((ids == cfg.image_token_id).astype(np.int64)),
        )
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), **kw)
    return out.logits.float().numpy()
