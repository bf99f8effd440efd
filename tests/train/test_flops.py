"""FLOPs per token and per image counted by hand on the tiny config, and MFU."""

from zoomiqa_jax.config import ModelConfig
from zoomiqa_jax.train.flops import (
    device_peak_flops,
    estimate_flops_per_token,
    estimate_vision_flops,
    mfu,
    text_matmul_params,
)


def test_flops_per_token_by_hand_on_tiny_config():
    cfg = ModelConfig.tiny()  # d 64, 4 q heads / 2 kv heads of 16, MLP 128, 2 layers, vocab 512
    q, k, v, o, mlp = 64 * 64, 64 * 32, 64 * 32, 64 * 64, 3 * 64 * 128
    n = 2 * (q + k + v + o + mlp) + 64 * 512
    assert text_matmul_params(cfg) == n == 106496
    assert estimate_flops_per_token(cfg, 100) == 6 * 106496 + 12 * 2 * 64 * 100 == 792576
    # 7B: N is the familiar ~7.07e9 matmul weights (untied head 3584 x 152064 counted once)
    assert 7.0e9 < text_matmul_params(ModelConfig.qwen2_5_vl_7b()) < 7.2e9


def test_vision_flops_by_hand_on_tiny_config():
    vis = ModelConfig.tiny().vision  # h 64, i 96, depth 4, 2 full-attention blocks, window 8x8 patches, out 64
    per_patch = 1176 * 64 + 4 * (4 * 64 * 64 + 3 * 64 * 96) + (16 * 64 * 64 + 4 * 64 * 64) / 4
    p = 256
    attention = 12 * 64 * (2 * 256 + 2 * 64) * p
    assert estimate_vision_flops(vis, p) == 6 * per_patch * p + attention


def test_mfu_and_peak():
    assert mfu(1e15, 2.0, 1e15, num_devices=2) == 0.25
    assert device_peak_flops() is None or device_peak_flops() > 0  # CPU: unknown
