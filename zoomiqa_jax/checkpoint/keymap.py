"""The HF <-> Flax parameter key map, as one table.

HF keys come in two layouts, both accepted on input:

    published (transformers 4.x, the Qwen checkpoints):  visual.*        model.layers.*  model.embed_tokens.*
    transformers 5:                                      model.visual.*  model.language_model.layers.* ...

Output always uses the published layout. Our keys are dotted NNX state paths
(`visual.blocks.3.attn.qkv.kernel`). Each rule says how the array changes on the way in:

    copy    the same array
    linear  torch Linear weight [out, in]  <->  our kernel [in, out] (a transpose)
    conv    torch Conv3d weight [D, C, T, P, P]  <->  our patch kernel [C*T*P*P, D]

All transforms are transposes and reshapes, so a round trip is bit-exact in every dtype.
"""

from __future__ import annotations

import re

import numpy as np

from zoomiqa_jax.config import ModelConfig

# (HF published-layout regex, our-path template, transform). Order matters only for readability.
RULES: tuple[tuple[str, str, str], ...] = (
    (r"visual\.patch_embed\.proj\.weight", "visual.patch_embed.kernel", "conv"),
    (r"visual\.blocks\.(\d+)\.(norm1|norm2)\.weight", r"visual.blocks.\1.\2.weight", "copy"),
    (r"visual\.blocks\.(\d+)\.attn\.(qkv|proj)\.weight", r"visual.blocks.\1.attn.\2.kernel", "linear"),
    (r"visual\.blocks\.(\d+)\.attn\.(qkv|proj)\.bias", r"visual.blocks.\1.attn.\2.bias", "copy"),
    (r"visual\.blocks\.(\d+)\.mlp\.(gate_proj|up_proj|down_proj)\.weight", r"visual.blocks.\1.mlp.\2.kernel", "linear"),
    (r"visual\.blocks\.(\d+)\.mlp\.(gate_proj|up_proj|down_proj)\.bias", r"visual.blocks.\1.mlp.\2.bias", "copy"),
    (r"visual\.merger\.ln_q\.weight", "visual.merger.ln_q.weight", "copy"),
    (r"visual\.merger\.mlp\.0\.weight", "visual.merger.fc1.kernel", "linear"),
    (r"visual\.merger\.mlp\.0\.bias", "visual.merger.fc1.bias", "copy"),
    (r"visual\.merger\.mlp\.2\.weight", "visual.merger.fc2.kernel", "linear"),
    (r"visual\.merger\.mlp\.2\.bias", "visual.merger.fc2.bias", "copy"),
    (r"model\.embed_tokens\.weight", "language_model.embed_tokens.embedding", "copy"),
    (r"model\.layers\.(\d+)\.(input_layernorm|post_attention_layernorm)\.weight",
     r"language_model.layers.\1.\2.weight", "copy"),
    (r"model\.layers\.(\d+)\.self_attn\.(q_proj|k_proj|v_proj|o_proj)\.weight",
     r"language_model.layers.\1.self_attn.\2.kernel", "linear"),
    (r"model\.layers\.(\d+)\.self_attn\.(q_proj|k_proj|v_proj)\.bias",
     r"language_model.layers.\1.self_attn.\2.bias", "copy"),
    (r"model\.layers\.(\d+)\.mlp\.(gate_proj|up_proj|down_proj)\.weight",
     r"language_model.layers.\1.mlp.\2.kernel", "linear"),
    (r"model\.norm\.weight", "language_model.norm.weight", "copy"),
    (r"lm_head\.weight", "lm_head.kernel", "linear"),
)

_HF_RULES = [(re.compile(h + r"\Z"), o, t) for h, o, t in RULES]


def _reverse_rule(ours: str, hf: str) -> tuple[re.Pattern[str], str]:
    """Turn (hf regex, our template) into (our regex, hf template): the k-th capture group of the HF regex
    replaces `\\k` in our template, and `\\k` replaces it in the HF side."""
    groups = re.findall(r"\([^)]*\)", hf)
    ours_re, hf_tpl = re.escape(ours), hf
    for k, group in enumerate(groups, 1):
        ours_re = ours_re.replace(re.escape(f"\\{k}"), group)
        hf_tpl = hf_tpl.replace(group, f"\\{k}", 1)
    return re.compile(ours_re + r"\Z"), hf_tpl.replace("\\.", ".")


_OUR_RULES = [(*_reverse_rule(o, h), t) for h, o, t in RULES]


def normalize_hf_key(key: str) -> str:
    """transformers-5 names -> published names (`model.visual.` -> `visual.`, `model.language_model.` -> `model.`)."""
    if key.startswith("model.visual."):
        return key[len("model.") :]
    if key.startswith("model.language_model."):
        return "model." + key[len("model.language_model.") :]
    return key


def hf_to_ours(key: str) -> tuple[str, str]:
    """HF key (either layout) -> (our dotted path, transform). KeyError if no rule matches."""
    k = normalize_hf_key(key)
    for pattern, template, transform in _HF_RULES:
        if pattern.match(k):
            return pattern.sub(template, k), transform
    raise KeyError(key)


def ours_to_hf(path: str) -> tuple[str, str]:
    """Our dotted path -> (published HF key, transform). KeyError if no rule matches."""
    for pattern, template, transform in _OUR_RULES:
        if pattern.match(path):
            return pattern.sub(template, path), transform
    raise KeyError(path)


def to_ours(transform: str, array: np.ndarray) -> np.ndarray:
    """An HF tensor -> our layout (exact: transposes and reshapes only)."""
    if transform == "copy":
        return array
    if transform == "linear":
        return np.ascontiguousarray(array.T)
    if transform == "conv":
        return np.ascontiguousarray(array.reshape(array.shape[0], -1).T)
    raise ValueError(f"unknown transform {transform!r}")


def to_hf(transform: str, array: np.ndarray, config: ModelConfig) -> np.ndarray:
    """Our array -> the HF tensor layout (exact)."""
    if transform == "copy":
        return array
    if transform == "linear":
        return np.ascontiguousarray(array.T)
    if transform == "conv":
        v = config.vision
        shape = (v.hidden_size, v.in_channels, v.temporal_patch_size, v.patch_size, v.patch_size)
        return np.ascontiguousarray(array.T.reshape(shape))
    raise ValueError(f"unknown transform {transform!r}")


def expected_hf_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every HF (published-layout) key this config needs, with its shape."""
    v, t = config.vision, config.text
    hd = t.head_dim
    shapes: dict[str, tuple[int, ...]] = {
        "visual.patch_embed.proj.weight": (v.hidden_size, v.in_channels, v.temporal_patch_size, v.patch_size,
                                           v.patch_size),
        "visual.merger.ln_q.weight": (v.hidden_size,),
        "visual.merger.mlp.0.weight": (v.hidden_size * v.merge_unit,) * 2,
        "visual.merger.mlp.0.bias": (v.hidden_size * v.merge_unit,),
        "visual.merger.mlp.2.weight": (v.out_hidden_size, v.hidden_size * v.merge_unit),
        "visual.merger.mlp.2.bias": (v.out_hidden_size,),
        "model.embed_tokens.weight": (t.vocab_size, t.hidden_size),
        "model.norm.weight": (t.hidden_size,),
    }
    for i in range(v.depth):
        p = f"visual.blocks.{i}."
        shapes |= {
            p + "norm1.weight": (v.hidden_size,),
            p + "norm2.weight": (v.hidden_size,),
            p + "attn.qkv.weight": (3 * v.hidden_size, v.hidden_size),
            p + "attn.qkv.bias": (3 * v.hidden_size,),
            p + "attn.proj.weight": (v.hidden_size, v.hidden_size),
            p + "attn.proj.bias": (v.hidden_size,),
        }
        for name in ("gate_proj", "up_proj"):
            shapes[p + f"mlp.{name}.weight"] = (v.intermediate_size, v.hidden_size)
            shapes[p + f"mlp.{name}.bias"] = (v.intermediate_size,)
        shapes[p + "mlp.down_proj.weight"] = (v.hidden_size, v.intermediate_size)
        shapes[p + "mlp.down_proj.bias"] = (v.hidden_size,)
    for i in range(t.num_hidden_layers):
        p = f"model.layers.{i}."
        shapes |= {
            p + "input_layernorm.weight": (t.hidden_size,),
            p + "post_attention_layernorm.weight": (t.hidden_size,),
            p + "self_attn.q_proj.weight": (t.num_attention_heads * hd, t.hidden_size),
            p + "self_attn.q_proj.bias": (t.num_attention_heads * hd,),
            p + "self_attn.k_proj.weight": (t.num_key_value_heads * hd, t.hidden_size),
            p + "self_attn.k_proj.bias": (t.num_key_value_heads * hd,),
            p + "self_attn.v_proj.weight": (t.num_key_value_heads * hd, t.hidden_size),
            p + "self_attn.v_proj.bias": (t.num_key_value_heads * hd,),
            p + "self_attn.o_proj.weight": (t.hidden_size, t.num_attention_heads * hd),
            p + "mlp.gate_proj.weight": (t.intermediate_size, t.hidden_size),
            p + "mlp.up_proj.weight": (t.intermediate_size, t.hidden_size),
            p + "mlp.down_proj.weight": (t.hidden_size, t.intermediate_size),
        }
    if not config.tie_word_embeddings:
        shapes["lm_head.weight"] = (t.vocab_size, t.hidden_size)
    return shapes
