"""The shipped tiny tokenizer: Qwen's special-token layout, the chat template, image placeholder expansion."""

import json

import pytest

from zoomiqa_jax.config import ModelConfig
from zoomiqa_jax.processing.tokenizer import (
    SPECIAL_TOKENS,
    TINY_TOKENIZER_DIR,
    TokenizerError,
    build_tiny_tokenizer,
    load_tokenizer,
    render_chat,
    token_ids_of,
)


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(TINY_TOKENIZER_DIR)


def test_shipped_asset_is_the_deterministic_build(tmp_path):
    build_tiny_tokenizer(tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert json.loads((tmp_path / name).read_text()) == json.loads((TINY_TOKENIZER_DIR / name).read_text())


def test_special_token_ids_match_tiny_config(tok):
    cfg = ModelConfig.tiny()
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    assert ids["<|image_pad|>"] == cfg.image_token_id
    assert ids["<|vision_start|>"] == cfg.vision_start_token_id
    assert ids["<|vision_end|>"] == cfg.vision_end_token_id
    assert ids["<|im_end|>"] == cfg.eos_token_id == tok.eos_token_id
    assert ids["<|endoftext|>"] == cfg.bos_token_id
    assert max(ids.values()) == cfg.text.vocab_size - 1
    assert len(tok) == cfg.text.vocab_size


def test_chat_layout_and_image_expansion(tok):
    msgs = [
        {"role": "user", "content": [{"type": "text", "text": "How would you judge the quality of this image?"},
                                     {"type": "image"}, {"type": "text", "text": "Cropped image:"}, {"type": "image"}]},
    ]
    ids = render_chat(tok, msgs, [(1, 4, 6), (1, 2, 2)])
    text = tok.decode(ids)
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n")
    pad = tok.convert_tokens_to_ids("<|image_pad|>")
    assert ids.count(pad) == 4 * 6 // 4 + 1
    start = tok.convert_tokens_to_ids("<|vision_start|>")
    first = ids.index(start)
    assert ids[first + 1: first + 7] == [pad] * 6 and ids[first + 7] != pad


def test_placeholder_count_mismatch_and_missing_dir(tok, tmp_path):
    msgs = [{"role": "user", "content": [{"type": "image"}]}]
    with pytest.raises(ValueError, match="1 images but 2 image grids"):
        render_chat(tok, msgs, [(1, 2, 2), (1, 2, 2)])
    with pytest.raises(TokenizerError, match=str(tmp_path)):
        load_tokenizer(tmp_path)


def test_digits_are_single_tokens_and_text_round_trips(tok):
    assert len(set(token_ids_of(tok, list("12345")).tolist())) == 5
    s = '<think>The sky is noisy.</think><answer>{"rating": 3.25}</answer>'
    assert tok.decode(tok(s, add_special_tokens=False)["input_ids"]) == s
