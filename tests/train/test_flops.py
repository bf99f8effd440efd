"""FLOPs per token and per image counted by hand on the tiny config, the batch count the MFU metric uses, the peak
table by device kind, and the SFT loop's logged MFU (no factor on top of the forward + backward count)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from zoomiqa_jax.config import ModelConfig
from zoomiqa_jax.train.flops import (
    attention_groups,
    device_peak_flops,
    estimate_flops_per_token,
    estimate_vision_flops,
    mfu,
    peak_flops_of_kind,
    text_matmul_params,
    train_step_flops,
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


def _tiny_batch(cfg: ModelConfig) -> dict:
    """3 rows of 50 tokens, images of 8x8 and 8x16 patches, padded with 64 patches (as add_model_inputs pads)."""
    from zoomiqa_jax.inference.engine import pad_vision_meta
    from zoomiqa_jax.model import vision_metadata

    grids = np.asarray([[1, 8, 8], [1, 8, 16]])
    meta = pad_vision_meta(vision_metadata(grids, cfg.vision), 256, cfg.vision.merge_unit)
    return {"input_ids": np.zeros((3, 50), np.int32), "pixel_values": np.zeros((256, 1176), np.float32),
            "vision_meta": meta, "image_grid_thw": grids}


def test_step_flops_count_the_batch_as_shaped_and_attention_per_image():
    cfg = ModelConfig.tiny()
    batch = _tiny_batch(cfg)
    assert sorted(attention_groups(batch)) == [64, 64, 128]  # two images and the padding group
    without_grids = {k: v for k, v in batch.items() if k != "image_grid_thw"}  # what the SFT loop's batch holds
    assert sorted(attention_groups(without_grids)) == [64, 64, 128]
    vision = estimate_vision_flops(cfg.vision, 64) * 2 + estimate_vision_flops(cfg.vision, 128)
    assert train_step_flops(cfg, without_grids) == 3 * 50 * estimate_flops_per_token(cfg, 50) + vision
    # one group over all 256 patches would count full attention across the images: more than the model computes
    assert estimate_vision_flops(cfg.vision, 256) > vision
    assert train_step_flops(cfg, {"input_ids": np.zeros((2, 8))}) == 16 * estimate_flops_per_token(cfg, 8)


def test_mfu_of_a_known_step_is_the_forward_backward_count_over_peak():
    """The 3B, 8 text rows x 2048 tokens in 1.0 s on one H100 SXM: 6 N + 12 L H hd T per token, by hand, and
    nothing on top (until 2026-12-08 the loop and the benchmark multiplied this by 3 again: 101% instead of 34%)."""
    cfg = ModelConfig.qwen2_5_vl_3b()  # L 36, d 2048, 16 q / 2 kv heads of 128, MLP 11008, vocab 151936
    per_layer = 2048 * 2048 + 2 * 2048 * 256 + 2048 * 2048 + 3 * 2048 * 11008
    n = 36 * per_layer + 2048 * 151936
    per_token = 6 * n + 12 * 36 * 16 * 128 * 2048
    flops = train_step_flops(cfg, {"input_ids": np.zeros((8, 2048), np.int32)})
    assert flops == 8 * 2048 * per_token == pytest.approx(3.3302e14, rel=1e-4)
    peak = peak_flops_of_kind("NVIDIA H100 80GB HBM3")
    assert peak == 989e12
    assert mfu(flops, 1.0, peak) == pytest.approx(0.33673, rel=1e-4)
    assert mfu(1e15, 2.0, 1e15, num_devices=2) == 0.25


@pytest.mark.parametrize("kind,peak", [
    ("TPU v4", 275e12), ("TPU v5 lite", 197e12), ("TPU v5", 459e12), ("TPU v6 lite", 918e12),
    ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H100 NVL", 835e12),
    ("NVIDIA H200", 989e12), ("NVIDIA GH200 480GB", 989e12), ("NVIDIA A100-SXM4-80GB", 312e12),
    ("TPU v4 lite", None), ("TPU7x", None), ("cpu", None),
])
def test_peak_flops_by_device_kind(kind, peak):
    """The kinds JAX reports (v5p says 'TPU v5', v5e 'TPU v5 lite', v6e 'TPU v6 lite'); unknown kinds give no MFU
    rather than a neighbour's peak ('TPU v4 lite' is not 'TPU v4')."""
    assert peak_flops_of_kind(kind) == peak


def test_peak_of_this_machine():
    assert device_peak_flops() is None or device_peak_flops() > 0  # CPU: unknown


@pytest.mark.slow
def test_sft_loop_logs_mfu_of_the_step_flops(tmp_path, monkeypatch):
    """A 2-step tiny SFT run with a pretend peak of 1 TFLOP/s: the logged MFU times step time times peak is the
    train_step_flops of the step's one micro-batch, exactly (log_every 1, no accumulation)."""
    import zoomiqa_jax.train.flops as flops_mod
    from zoomiqa_jax.train.config import load_train_config
    from zoomiqa_jax.train.sft_loop import run_sft

    counted: list[float] = []
    real = flops_mod.train_step_flops

    def recording(config, batch):
        counted.append(real(config, batch))
        return counted[-1]

    monkeypatch.setattr(flops_mod, "device_peak_flops", lambda device=None: 1e12)
    monkeypatch.setattr(flops_mod, "train_step_flops", recording)
    cfg = load_train_config("configs/sft_tiny.yaml", [
        "run.steps=2", "run.log_every=1", "optim.grad_accum=1", "data.batch_size=2", "data.synthetic_images=4",
        "data.synthetic_size=56", "run.export_hf=false", f"run.out_dir={tmp_path / 'run'}"])
    run_sft(cfg, progress=False, log=lambda _: None)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "mfu" in r]
    assert len(rows) == 2 == len(counted)
    for row, flops in zip(rows, counted):
        assert row["mfu"] * row["step_time_s"] * 1e12 == pytest.approx(flops, rel=1e-9)


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="libtpu (the TPU compiler) is not installed")
def test_peak_flops_of_the_kinds_libtpu_reports_for_tpu_topologies():
    """The device kinds of AOT topology descriptions (what `zoomiqa plan` compiles for) come from libtpu itself:
    v5p, v5e and v6e chips get their peaks. In a subprocess, so that this test process keeps its CPU backend."""
    code = ("from jax.experimental import topologies\n"
            "from zoomiqa_jax.train.flops import device_peak_flops\n"
            "for name in ['v5p:2x2x1', 'v5e:2x2', 'v6e:2x2']:\n"
            "    d = topologies.get_topology_desc(platform='tpu', topology_name=name).devices[0]\n"
            "    print(name, repr(d.device_kind), device_peak_flops(d))\n")
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == ["v5p:2x2x1 'TPU v5' 459000000000000.0",
                                        "v5e:2x2 'TPU v5 lite' 197000000000000.0",
                                        "v6e:2x2 'TPU v6 lite' 918000000000000.0"]
