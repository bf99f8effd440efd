"""FLOPs and model FLOPs utilisation (MFU) of a training step, counted analytically from the model config.

One convention everywhere (the SFT loop's `mfu` metric, benchmarks/bench_train_step.py, `zoomiqa plan`):

* every count is TRAINING FLOPs, forward + backward: 2 FLOPs per multiply-add, times 3 for the forward, the
  backward to the inputs and the backward to the weights. `estimate_flops_per_token` (text decoder) and
  `estimate_vision_flops` (vision tower) already include that factor 3 (their "6 N" and "12 ... T" terms);
  nothing multiplies them again. (Until 2026-12-08 the SFT loop and the benchmark multiplied by 3 once more,
  overstating MFU 3x.)
* the batch is counted as shaped: every row and position of `input_ids` (padding included, as MaxText counts
  `max_target_length`), every patch of `pixel_values`; attention is counted per attention group (one image, or
  the padding patches, which attend only to each other), as the model computes it. Real-token throughput is the
  loop's `tokens_per_s`.
* remat recomputation is NOT counted (that would be hardware FLOPs utilisation, HFU); neither are the
  optimizer update, norms, softmax and the embedding lookup (no matmul).

`train_step_flops(config, batch)` gives a batch's count, `mfu` divides it by the step time and the devices' dense
bf16 peak (`device_peak_flops`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from zoomiqa_jax.config import ModelConfig, VisionConfig


def text_matmul_params(config: ModelConfig) -> int:
    """Weights of the decoder's matrix multiplies, per token (the N of 6N): per layer
    d*(H*hd) + 2*d*(K*hd) + (H*hd)*d  (q, k, v, o)  +  3*d*f  (gate, up, down), times L, plus the LM head d*V.
    The embedding lookup, biases and norms do no matmul and are not counted."""
    t = config.text
    q, kv = t.num_attention_heads * t.head_dim, t.num_key_value_heads * t.head_dim
    per_layer = t.hidden_size * q + 2 * t.hidden_size * kv + q * t.hidden_size + 3 * t.hidden_size * t.intermediate_size
    return t.num_hidden_layers * per_layer + t.hidden_size * t.vocab_size


def estimate_flops_per_token(config: ModelConfig, seq_len: int) -> float:
    """Training FLOPs (forward + backward) per text token at sequence length T (PaLM, Chowdhery et al. 2022, App. B):

        6 N  +  12 L (H hd) T

    N from `text_matmul_params`; 6 = 2 (multiply-add) x 3 (forward, and backward for inputs and weights).
    The attention term counts QK^T and AV (2 matmuls x 2 FLOPs x T keys x H hd per layer, x 3), over all T keys
    (no causal discount, as in PaLM's MFU). Recomputation for remat is NOT counted (that would be HFU)."""
    t = config.text
    return 6.0 * text_matmul_params(config) + 12.0 * t.num_hidden_layers * t.num_attention_heads * t.head_dim * seq_len


def estimate_vision_flops(vision: VisionConfig, num_patches: int) -> float:
    """Training FLOPs (forward + backward, like `estimate_flops_per_token`) of the vision tower for ONE attention
    group of P patches (one image; the full-attention blocks attend within it): 6 N_v P + attention, with

        N_v = patch_dim h + depth (4 h^2 + 3 h i) + (16 h^2 + 4 h o) / 4   (patch embed, blocks, 2x2 merger MLP)
        attention = 12 h keys P per layer, keys = P in full-attention blocks, min(P, (window / patch)^2) elsewhere
    (h hidden, i MLP width, o out_hidden_size; 6 and 12 as in the text count). For a batch of several images sum
    this per image (`train_step_flops`): called once on the batch's total patch count it would count full attention
    across images, which the model does not compute."""
    h, i, o = vision.hidden_size, vision.intermediate_size, vision.out_hidden_size
    per_patch = vision.patch_dim * h + vision.depth * (4 * h * h + 3 * h * i) + (16 * h * h + 4 * h * o) / 4
    window = min(num_patches, (vision.window_size // vision.patch_size) ** 2)
    full = len(vision.fullatt_block_indexes)
    keys = full * num_patches + (vision.depth - full) * window
    return 6.0 * per_patch * num_patches + 12.0 * h * keys * num_patches


def attention_groups(batch: Mapping[str, Any]) -> list[int]:
    """Patch counts of the attention groups of a batch's images: from `image_grid_thw` [n, 3] when present, else
    from `vision_meta.image_segment` (one group per image id; the padding patches, id -1, form one more group, as
    they attend only to each other); [] for a batch without images."""
    if batch.get("pixel_values") is None:
        return []
    grids = batch.get("image_grid_thw")
    if grids is not None:
        counts = [int(c) for c in np.asarray(grids).prod(-1)]
        pad = int(np.asarray(batch["pixel_values"]).shape[0]) - sum(counts)
        return counts + ([pad] if pad > 0 else [])
    meta = batch.get("vision_meta")
    segments = getattr(meta, "image_segment", None)
    if segments is None:
        return [int(np.asarray(batch["pixel_values"]).shape[0])]  # no metadata: one group (an upper bound)
    _, counts = np.unique(np.asarray(segments), return_counts=True)
    return [int(c) for c in counts]


def train_step_flops(config: ModelConfig, batch: Mapping[str, Any]) -> float:
    """Training FLOPs (forward + backward) of one micro-batch as shaped: rows x T x `estimate_flops_per_token` at
    T = input_ids.shape[1], plus `estimate_vision_flops` per attention group (`attention_groups`). The count the
    `mfu` metric, the benchmark and `zoomiqa plan` use (module docstring)."""
    rows, seq = (int(n) for n in np.shape(batch["input_ids"]))
    text = estimate_flops_per_token(config, seq) * rows * seq
    return text + sum(estimate_vision_flops(config.vision, p) for p in attention_groups(batch))


# Dense bf16 peak FLOP/s per chip (vendor data sheets, no sparsity), by the device_kind JAX reports. TPU kinds are
# matched exactly: v5p reports "TPU v5", v5e "TPU v5 lite", v6e "TPU v6 lite" (jax's pallas get_tpu_info test and
# XLA's ifrt device-memory table use these strings). GPU kinds carry the product name ("NVIDIA H100 80GB HBM3" is
# the SXM part), matched by the longest name the kind contains.
TPU_PEAK_FLOPS = {"TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5": 459e12, "TPU v6 lite": 918e12}
GPU_PEAK_FLOPS = {"A100": 312e12, "H100": 989e12, "H100 PCIe": 756e12, "H100 NVL": 835e12, "H200": 989e12,
                  "H200 NVL": 835e12, "GH200": 989e12}
PEAK_FLOPS = {**TPU_PEAK_FLOPS, **GPU_PEAK_FLOPS}


def peak_flops_of_kind(kind: str) -> float | None:
    """Peak dense bf16 FLOP/s for a device_kind string, or None when unknown (CPU, an unlisted chip: no MFU rather
    than a wrong one)."""
    for name, flops in TPU_PEAK_FLOPS.items():
        if kind.strip().lower() == name.lower():
            return flops
    if kind.lower().startswith("tpu"):
        return None  # e.g. "TPU v4 lite" (v4i) must not read as "TPU v4"
    for name, flops in sorted(GPU_PEAK_FLOPS.items(), key=lambda kv: -len(kv[0])):
        if name.lower() in kind.lower():
            return flops
    return None


def device_peak_flops(device: jax.Device | None = None) -> float | None:
    """Peak dense bf16 FLOP/s of `device` (default: the first) by its device_kind (`peak_flops_of_kind`)."""
    return peak_flops_of_kind((device or jax.devices()[0]).device_kind)


def mfu(flops_per_step: float, step_time_s: float, peak_flops_per_device: float, num_devices: int = 1) -> float:
    """Model FLOPs utilisation = flops_per_step / (step_time_s * peak_flops_per_device * num_devices), where
    flops_per_step is `train_step_flops` summed over the step's micro-batches (already forward + backward)."""
    return flops_per_step / (step_time_s * peak_flops_per_device * num_devices)
