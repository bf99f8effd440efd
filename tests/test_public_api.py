"""The public names issue 2 and 3 promise resolve, and the library imports without torch."""

import subprocess
import sys


def test_public_entry_points_are_callables():
    import zoomiqa_jax

    for name in ("generate", "load_hf", "save_hf", "preprocess_images", "Qwen25VL", "ModelConfig"):
        assert callable(getattr(zoomiqa_jax, name)), name
    import zoomiqa_jax.inference  # noqa: F401  (importing the subpackage must not shadow the function)

    assert callable(zoomiqa_jax.generate)


HIDE_TORCH = """
import importlib.machinery as machinery
_find = machinery.PathFinder.find_spec
def _find_spec(name, path=None, target=None):
    if name == "torch" or name.startswith("torch."):
        return None  # as if torch were not installed: transformers then takes its torch-less paths
    return _find(name, path, target)
machinery.PathFinder.find_spec = staticmethod(_find_spec)
"""

WORK = """
import sys, tempfile
import numpy as np
from flax import nnx
import zoomiqa_jax
from zoomiqa_jax.config import ModelConfig
from zoomiqa_jax.processing.tokenizer import TINY_TOKENIZER_DIR, load_tokenizer
tok = load_tokenizer(TINY_TOKENIZER_DIR)
model = zoomiqa_jax.Qwen25VL(ModelConfig.tiny(), rngs=nnx.Rngs(0))
d = tempfile.mkdtemp() + "/ckpt"
zoomiqa_jax.save_hf(model, d, tokenizer_dir=TINY_TOKENIZER_DIR)
model, cfg = zoomiqa_jax.load_hf(d)
px, grid = zoomiqa_jax.preprocess_images([np.zeros((56, 84, 3), np.uint8)])
ids = np.array([[1, 2, cfg.vision_start_token_id] + [cfg.image_token_id] * 6 + [cfg.vision_end_token_id, 3]])
out = zoomiqa_jax.generate(model, ids, np.ones_like(ids), px, grid, max_new_tokens=3)
assert out.tokens.shape == (1, 3)
assert "torch" not in sys.modules, "torch was imported"
print("ok")
"""


def test_library_runs_without_torch():
    out = subprocess.run([sys.executable, "-c", HIDE_TORCH + WORK], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]
