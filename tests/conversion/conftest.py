"""Tiny HF checkpoints on disk, written by transformers itself, shared by the conversion tests."""

import copy
import json
from pathlib import Path

import pytest
import torch

from tests.reference import make_hf_model
from zoomiqa_jax.checkpoint.keymap import normalize_hf_key
from zoomiqa_jax.checkpoint.safetensors_io import CheckpointReader
from zoomiqa_jax.config import ModelConfig

CONFIGS = {
    "tied": ModelConfig.tiny(tie_word_embeddings=True),
    "untied": ModelConfig.tiny(tie_word_embeddings=False, window_size=56, depth=3, fullatt_block_indexes=(0, 2)),
}

# Stand-ins for the tokenizer / processor files a real checkpoint ships; they must be copied byte for byte.
TOKENIZER_FILES = {
    "tokenizer.json": '{"version": "1.0", "model": {"type": "BPE"}}',
    "tokenizer_config.json": '{"model_max_length": 32768}',
    "vocab.json": '{"a": 0}',
    "merges.txt": "#version: 0.2\na b\n",
    "chat_template.jinja": "{% for m in messages %}{{ m.content }}{% endfor %}",
    "preprocessor_config.json": '{"min_pixels": 3136, "max_pixels": 12845056}',
}


def save_hf_with_transformers(model, out: Path, dtype=torch.float32, tokenizer: bool = True) -> Path:
    m = copy.deepcopy(model).to(dtype)
    m.save_pretrained(out)
    if tokenizer:
        for name, text in TOKENIZER_FILES.items():
            (out / name).write_text(text)
    return out


def read_all(path: Path) -> dict:
    """{published-layout key: array} of an HF directory (either layout)."""
    with CheckpointReader(path) as r:
        return {normalize_hf_key(k): r.get_tensor(k) for k in r.keys()}


@pytest.fixture(scope="session", params=list(CONFIGS))
def hf_case(request, tmp_path_factory):
    """(name, config, transformers model, float32 HF dir, bfloat16 HF dir)."""
    cfg = CONFIGS[request.param]
    model = make_hf_model(cfg, seed=3)
    root = tmp_path_factory.mktemp(f"hf_{request.param}")
    f32 = save_hf_with_transformers(model, root / "f32")
    bf16 = save_hf_with_transformers(model, root / "bf16", dtype=torch.bfloat16)
    assert json.loads((f32 / "config.json").read_text())["tie_word_embeddings"] == cfg.tie_word_embeddings
    return request.param, cfg, model, f32, bf16
