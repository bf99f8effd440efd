"""FLOPs and model FLOPs utilisation (MFU) of a training step, counted analytically from the model config.

`estimate_flops_per_token` is the PaLM count (forward + backward); `estimate_vision_flops` the same for the vision
tower; `mfu` divides the FLOPs of a step by the step time and the devices' dense bf16 peak (`device_peak_flops`).
"""

from __future__ import annotations

import jax

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
    """Training FLOPs of the vision tower for one image of P patches: 6 N_v P + attention, with per patch

        N_v = patch_dim h + depth (4 h^2 + 3 h i) + (16 h^2 + 4 h o) / 4   (patch embed, blocks, 2x2 merger MLP)
        attention = 12 h keys per layer, keys = P in full-attention blocks, min(P, (window / patch)^2) elsewhere
    (h hidden, i MLP width, o out_hidden_size)."""
    h, i, o = vision.hidden_size, vision.intermediate_size, vision.out_hidden_size
    per_patch = vision.patch_dim * h + vision.depth * (4 * h * h + 3 * h * i) + (16 * h * h + 4 * h * o) / 4
    window = min(num_patches, (vision.window_size // vision.patch_size) ** 2)
    full = len(vision.fullatt_block_indexes)
    keys = full * num_patches + (vision.depth - full) * window
    return 6.0 * per_patch * num_patches + 12.0 * h * keys * num_patches


# Dense bf16 peak FLOP/s per device (vendor data sheets; no sparsity).
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "TPU v4": 275e12, "TPU v5 lite": 197e12,
              "TPU v5e": 197e12, "TPU v5p": 459e12, "TPU v6 lite": 918e12}


def device_peak_flops(device: jax.Device | None = None) -> float | None:
    """Peak dense bf16 FLOP/s of `device` (default: the first) by its device_kind, or None when unknown (CPU)."""
    kind = (device or jax.devices()[0]).device_kind
    for name, flops in sorted(PEAK_FLOPS.items(), key=lambda kv: -len(kv[0])):
        if name.lower() in kind.lower():
            return flops
    return None


def mfu(flops_per_step: float, step_time_s: float, peak_flops_per_device: float, num_devices: int = 1) -> float:
    """Model FLOPs utilisation = flops_per_step / (step_time_s * peak_flops_per_device * num_devices), where
    flops_per_step = tokens * estimate_flops_per_token (+ images * estimate_vision_flops)."""
    return flops_per_step / (step_time_s * peak_flops_per_device * num_devices)
