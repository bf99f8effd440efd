"""One tiny random model, its saved checkpoint and the tiny tokenizer for every curation test of a worker
(building the model takes seconds on the CPU; the tests only read it)."""

import pytest
from flax import nnx

from zoomiqa_jax.checkpoint.hf import save_hf
from zoomiqa_jax.config import ModelConfig
from zoomiqa_jax.model import Qwen25VL
from zoomiqa_jax.processing.tokenizer import TINY_TOKENIZER_DIR, load_tokenizer


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return load_tokenizer(TINY_TOKENIZER_DIR)


@pytest.fixture(scope="session")
def tiny_model():
    return Qwen25VL(ModelConfig.tiny(), rngs=nnx.Rngs(0))


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_model, tmp_path_factory):
    return save_hf(tiny_model, tmp_path_factory.mktemp("curate_ckpt") / "tiny", tokenizer_dir=TINY_TOKENIZER_DIR)
