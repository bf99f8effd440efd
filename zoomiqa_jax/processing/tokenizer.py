"""Tokenizer loading, chat rendering with image placeholders, and the built-in tiny tokenizer.

Real checkpoints carry their tokenizer (tokenizer.json + tokenizer_config.json with the chat template); it is
loaded offline with transformers' AutoTokenizer. The tiny tokenizer shipped in `zoomiqa_jax/assets/` is a
512-token byte-level BPE with Qwen's 14 special tokens at the top of the vocabulary (in Qwen's order) and a
Qwen2-VL-style chat template: tests and the CPU demo use it with `ModelConfig.tiny()`.

`render_chat` turns chat messages into token ids: the template writes one `<|image_pad|>` per image, and each
is expanded to the image's number of merged patches (t * h * w / merge^2), as the HF processor does.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zoomiqa_jax.processing.image import num_image_tokens

# Qwen's special tokens, in id order from <|endoftext|> (151643 in the real vocabulary).
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
IMAGE_PAD = "<|image_pad|>"

# Qwen2-VL's chat layout: a default system turn, <|im_start|>role\n ... <|im_end|>\n, images as
# <|vision_start|><|image_pad|><|vision_end|> where they appear in the content.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

TINY_TOKENIZER_DIR = Path(__file__).resolve().parent.parent / "assets" / "tiny_tokenizer"

_CORPUS_WORDS = (
    "How would you judge the quality of this image? Please rate the image quality from 1 to 5. "
    "<think> </think> <answer> </answer> Image Quality Summary Directions for Improvement Issues to Avoid "
    "Decision & Rationale Crop Inspection Summary Final Decision Original image: Cropped image: "
    '{"bbox_2d": [0.25, 0.25, 0.75, 0.75], "rating": 3.25, "tool": "crop"} {"tool": "final"} '
    '"distortion_class": "noise", "severity": "moderate" blur compression darken null slight obvious serious '
    "catastrophic The image is sharp clear noisy blurry dark bright overexposed underexposed well-lit detailed "
    "texture edges sky region corner center left right top bottom background foreground subject face text "
    "good poor fair excellent bad quality score rating 0 1 2 3 4 5 6 7 8 9 . , : ; ! ? ( ) [ ] { } \" ' - "
)


class TokenizerError(ValueError):
    """A tokenizer directory is missing or unusable."""


def load_tokenizer(path: str | Path) -> Any:
    """AutoTokenizer from a local directory, offline. Raises TokenizerError naming the directory."""
    path = Path(path)
    if not (path / "tokenizer.json").exists() and not (path / "tokenizer_config.json").exists():
        raise TokenizerError(f"{path}: no tokenizer.json / tokenizer_config.json (copy the checkpoint's tokenizer)")
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as e:  # transformers raises many types here
        raise TokenizerError(f"{path}: cannot load tokenizer ({type(e).__name__}: {e})") from e
    if getattr(tok, "chat_template", None) is None:
        tok.chat_template = CHAT_TEMPLATE
    return tok


def render_chat(
    tokenizer: Any,
    messages: list[dict[str, Any]],
    image_grids: Sequence[Sequence[int]] = (),
    *,
    add_generation_prompt: bool = True,
    merge_size: int = 2,
) -> list[int]:
    """Chat messages -> token ids with every image placeholder expanded to its grid's token count.

    `image_grids` lists the (t, h, w) patch grid of each image in the order the images appear.
    """
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    pad_id = tokenizer.convert_tokens_to_ids(IMAGE_PAD)
    n_pads = sum(1 for i in ids if i == pad_id)
    if n_pads != len(image_grids):
        raise ValueError(f"the messages hold {n_pads} images but {len(image_grids)} image grids were given")
    out: list[int] = []
    grids = iter(image_grids)
    for i in ids:
        if i == pad_id:
            out.extend([pad_id] * num_image_tokens(next(grids), merge_size))
        else:
            out.append(i)
    return out


def build_tiny_tokenizer(out_dir: str | Path, vocab_size: int = 512) -> Path:
    """Train the tiny byte-level BPE (deterministic) and write tokenizer.json + tokenizer_config.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    n_base = vocab_size - len(SPECIAL_TOKENS)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=n_base, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator([_CORPUS_WORDS] * 4, trainer)
    filler = 0
    while tok.get_vocab_size() < n_base:  # a small corpus may learn fewer merges: reserve the rest
        tok.add_tokens([f"<|reserved_{filler}|>"])
        filler += 1
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    ids = [tok.token_to_id(t) for t in SPECIAL_TOKENS]
    if ids != list(range(n_base, vocab_size)):
        raise RuntimeError(f"special tokens landed at {ids}, expected {n_base}..{vocab_size - 1}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": 32768,
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "additional_special_tokens": list(SPECIAL_TOKENS[1:]),
        "chat_template": CHAT_TEMPLATE,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out


def token_ids_of(tokenizer: Any, texts: Sequence[str]) -> np.ndarray:
    """The single token id of each text (e.g. the digits "1".."5"); ValueError if one is not a single token."""
    out = []
    for t in texts:
        ids = tokenizer(t, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ValueError(f"{t!r} is {len(ids)} tokens, expected one")
        out.append(ids[0])
    return np.asarray(out, np.int32)
