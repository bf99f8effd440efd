"""zoomiqa-jax: Zoom-IQA and Q-Insight image-quality reasoning on Qwen2.5-VL, in JAX/Flax NNX.

Heavy submodules load on first use, so `import zoomiqa_jax` stays cheap.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

__version__ = "0.1.0"


class _DropTorchNotice(logging.Filter):
    """Drops transformers' "PyTorch was not found. Models won't be available ..." notice, printed whenever it is
    imported without torch: we use only its tokenizers, so on every command it was noise. Every other transformers
    message still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("PyTorch was not found. Models won't be available")


# Installed before any module imports transformers (all of them import this package first); the logger object
# is the one transformers' own `logging.get_logger("transformers")` returns later.
if not any(isinstance(f, _DropTorchNotice) for f in logging.getLogger("transformers").filters):
    logging.getLogger("transformers").addFilter(_DropTorchNotice())

_LAZY = {
    "ModelConfig": "zoomiqa_jax.config",
    "VisionConfig": "zoomiqa_jax.config",
    "TextConfig": "zoomiqa_jax.config",
    "Qwen25VL": "zoomiqa_jax.model",
    "prepare_inputs": "zoomiqa_jax.model",
    "preprocess_images": "zoomiqa_jax.processing.image",
    "generate": "zoomiqa_jax.inference.engine",
    "load_hf": "zoomiqa_jax.checkpoint.hf",
    "save_hf": "zoomiqa_jax.checkpoint.hf",
    "load_orbax": "zoomiqa_jax.checkpoint.orbax_io",
    "save_orbax": "zoomiqa_jax.checkpoint.orbax_io",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'zoomiqa_jax' has no attribute {name!r}")
