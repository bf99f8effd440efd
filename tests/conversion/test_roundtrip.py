"""hf -> orbax -> hf is bit-exact, keeps dtypes, and transformers loads the result with the same logits."""

import json

import ml_dtypes
import numpy as np
import pytest
import torch

from tests.conversion.conftest import TOKENIZER_FILES, read_all
from tests.reference import hf_logits, image_prompt, left_pad, random_pixels
from zoomiqa_jax.checkpoint.hf import load_hf, save_hf
from zoomiqa_jax.checkpoint.orbax_io import load_orbax, save_orbax
from zoomiqa_jax.checkpoint.safetensors_io import INDEX_FILE, TensorSpec, write_checkpoint
from zoomiqa_jax.checkpoint.state import model_param_items
from zoomiqa_jax.config import ModelConfig


def hf_orbax_hf(src, tmp_path, **save_kw):
    model, _ = load_hf(src)
    config_dict = json.loads((src / "config.json").read_text())
    save_orbax(model, tmp_path / "orbax", config_dict=config_dict, tokenizer_dir=src)
    restored, _ = load_orbax(tmp_path / "orbax")
    save_hf(restored, tmp_path / "hf", config_dict=json.loads((tmp_path / "orbax/config.json").read_text()),
            tokenizer_dir=tmp_path / "orbax", **save_kw)
    return model, restored, tmp_path / "hf"


def assert_bit_exact(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert np.array_equal(a[k].view(np.uint8), b[k].view(np.uint8)), f"{k}: bits differ"


@pytest.mark.parametrize("stored", ["f32", "bf16"])
def test_hf_orbax_hf_is_bit_exact_and_keeps_dtype(hf_case, stored, tmp_path):
    _, cfg, _, f32, bf16 = hf_case
    src = f32 if stored == "f32" else bf16
    want = np.dtype(np.float32) if stored == "f32" else np.dtype(ml_dtypes.bfloat16)
    model, restored, out = hf_orbax_hf(src, tmp_path, max_shard_bytes=100_000)
    for (p1, v1), (p2, v2) in zip(model_param_items(model), model_param_items(restored)):
        assert p1 == p2 and v1.dtype == v2.dtype == want
        assert np.array_equal(np.asarray(v1).view(np.uint8), np.asarray(v2).view(np.uint8)), p1
    original, written = read_all(src), read_all(out)
    assert_bit_exact(original, written)
    assert ("lm_head.weight" in written) == (not cfg.tie_word_embeddings)
    index = json.loads((out / INDEX_FILE).read_text())
    assert index["metadata"]["total_size"] == sum(v.nbytes for v in written.values())
    assert len(set(index["weight_map"].values())) > 1
    config = json.loads((out / "config.json").read_text())
    assert config.get("dtype", config.get("torch_dtype")) == want.name
    for name, text in TOKENIZER_FILES.items():
        assert (tmp_path / "orbax" / name).read_text() == text
        assert (out / name).read_text() == text
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen == json.loads((src / "generation_config.json").read_text())


def test_transformers_loads_our_output_with_same_logits(hf_case, tmp_path):
    _, cfg, hf_model, f32, _ = hf_case
    from transformers import Qwen2_5_VLForConditionalGeneration

    _, _, out = hf_orbax_hf(f32, tmp_path, max_shard_bytes=150_000)
    reloaded = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        out, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    grids = [(1, 8, 12)]
    ids, mask = left_pad([image_prompt(cfg, grids, [1, 2, 3]), [4, 5, 6, 7]])
    pixels = random_pixels(cfg, grids, seed=4)
    want = hf_logits(hf_model, cfg, ids, mask, pixels, grids)
    got = hf_logits(reloaded, cfg, ids, mask, pixels, grids)
    np.testing.assert_array_equal(got, want)


def test_sharded_transformers5_layout_input_loads_the_same_params(hf_case, tmp_path):
    """An index + shards in `model.visual.*` / `model.language_model.*` naming gives the same model."""
    _, _, _, f32, _ = hf_case
    tensors = read_all(f32)
    renamed = {
        ("model." + k if k.startswith("visual.") else k.replace("model.", "model.language_model.", 1)
         if k.startswith("model.") else k): v
        for k, v in tensors.items()
    }
    assert any(k.startswith("model.visual.") for k in renamed)
    src = tmp_path / "t5"
    src.mkdir()
    specs = [TensorSpec(k, v.shape, v.dtype) for k, v in renamed.items()]
    files = write_checkpoint(src, specs, renamed.items(), max_shard_bytes=120_000)
    assert INDEX_FILE in files and len(files) > 3
    (src / "config.json").write_text((f32 / "config.json").read_text())
    a, _ = load_hf(f32)
    b, _ = load_hf(src)
    for (p1, v1), (p2, v2) in zip(model_param_items(a), model_param_items(b)):
        assert p1 == p2 and np.array_equal(np.asarray(v1), np.asarray(v2)), p1
    _, _, out = hf_orbax_hf(src, tmp_path / "rt")
    assert_bit_exact(tensors, read_all(out))  # written back in the published layout


def test_save_hf_without_source_files_writes_config_and_qwen_generation_defaults(hf_case, tmp_path):
    from transformers import GenerationConfig

    _, cfg, _, _, bf16 = hf_case
    model, _ = load_hf(bf16)
    save_hf(model, tmp_path / "hf")
    config = json.loads((tmp_path / "hf/config.json").read_text())
    assert config["torch_dtype"] == "bfloat16" and ModelConfig.from_hf_dict(config) == cfg
    gen = GenerationConfig.from_pretrained(tmp_path / "hf")
    assert (gen.bos_token_id, gen.pad_token_id, gen.eos_token_id) == (
        cfg.bos_token_id, cfg.bos_token_id, [cfg.eos_token_id, cfg.bos_token_id])
    assert (gen.do_sample, gen.temperature, gen.top_p, gen.top_k, gen.repetition_penalty) == (
        True, 0.1, 0.001, 1, 1.05)
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == ["config.json", "generation_config.json",
                                                                   "model.safetensors"]
