"""The README's Python snippet ("Using a real checkpoint") runs as written, on a tiny random HF checkpoint
and a small photo standing in for the real ones: only the two paths it names are substituted."""

import re
from pathlib import Path

import numpy as np
import pytest
from flax import nnx
from PIL import Image

from zoomiqa_jax.checkpoint.hf import save_hf
from zoomiqa_jax.config import ModelConfig
from zoomiqa_jax.model import Qwen25VL
from zoomiqa_jax.processing.tokenizer import TINY_TOKENIZER_DIR

README = Path(__file__).resolve().parents[1] / "README.md"
CHECKPOINT, PHOTO = "path/to/Qwen2.5-VL-7B-Instruct", "photo.jpg"


def readme_snippet() -> str:
    """The first ```python block under the "## Using a real checkpoint" heading."""
    section = README.read_text().split("## Using a real checkpoint", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README: no python block under 'Using a real checkpoint'"
    return match.group(1)


@pytest.mark.slow  # eager forward (18 s of CPU: op-by-op compiles) + generate (11 s) + imports: 77 s wall at load 5
def test_readme_python_snippet_runs_as_written(tmp_path, capsys):
    code = readme_snippet()
    assert f'"{CHECKPOINT}"' in code and f'"{PHOTO}"' in code, "the snippet no longer names the paths the test swaps"
    config = ModelConfig.tiny()
    checkpoint = save_hf(Qwen25VL(config, rngs=nnx.Rngs(0)), tmp_path / "ckpt", tokenizer_dir=TINY_TOKENIZER_DIR)
    photo = tmp_path / PHOTO
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (56, 84, 3), dtype=np.uint8)).save(photo)
    code = code.replace(f'"{CHECKPOINT}"', repr(str(checkpoint))).replace(f'"{PHOTO}"', repr(str(photo)))
    namespace: dict = {}
    exec(compile(code, f"{README}:snippet", "exec"), namespace)  # noqa: S102 (our own README)
    ids, logits = namespace["input_ids"], namespace["logits"]
    assert (ids == config.image_token_id).sum() == 6  # 56x84 px -> 4x6 patches -> 6 merged image tokens
    assert logits.shape == (1, ids.shape[1], config.text.vocab_size)
    assert np.isfinite(np.asarray(logits, np.float32)).all()
    assert namespace["out"].tokens.shape == (1, 128)
    capsys.readouterr()
