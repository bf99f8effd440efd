"""Model configuration for Qwen2.5-VL, read from and written to Hugging Face `config.json`.

Two layouts exist in the wild and both load here:

* the flat transformers-4.x layout of the published Qwen checkpoints: text fields at the top level, the vision
  tower under `vision_config`, M-RoPE under `rope_scaling = {"type": "mrope", "mrope_section": [...]}`;
* the nested transformers-5 layout: text fields under `text_config`, RoPE under `rope_parameters`.

`to_hf_dict` writes the published flat layout, which every transformers version since 4.49 loads.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A config file or dict does not describe a Qwen2.5-VL model we can build."""


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    """The Qwen2.5-VL vision tower (a ViT with window attention and a 2x2 patch merger)."""

    depth: int = 32
    hidden_size: int = 1280
    intermediate_size: int = 3420
    num_heads: int = 16
    in_channels: int = 3
    patch_size: int = 14
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    window_size: int = 112
    out_hidden_size: int = 2048
    fullatt_block_indexes: tuple[int, ...] = (7, 15, 23, 31)
    tokens_per_second: int = 2
    rope_theta: float = 10000.0
    hidden_act: str = "silu"
    rms_norm_eps: float = 1e-6  # fixed in the reference implementation

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def patch_dim(self) -> int:
        """Length of one flattened patch: channels x temporal x patch x patch."""
        return self.in_channels * self.temporal_patch_size * self.patch_size**2

    @property
    def merge_unit(self) -> int:
        return self.spatial_merge_size**2

    @property
    def merger_window(self) -> int:
        """Window side in merged (LLM) tokens: 112 px / 14 px / 2 = 4."""
        return self.window_size // self.spatial_merge_size // self.patch_size


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """The Qwen2 decoder with multimodal RoPE."""

    vocab_size: int = 151936
    hidden_size: int = 2048
    intermediate_size: int = 11008
    num_hidden_layers: int = 36
    num_attention_heads: int = 16
    num_key_value_heads: int = 2
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1000000.0
    mrope_section: tuple[int, int, int] = (16, 24, 24)
    max_position_embeddings: int = 128000
    hidden_act: str = "silu"

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build `Qwen2_5_VLForConditionalGeneration`."""

    vision: VisionConfig = dataclasses.field(default_factory=VisionConfig)
    text: TextConfig = dataclasses.field(default_factory=TextConfig)
    tie_word_embeddings: bool = True
    image_token_id: int = 151655
    video_token_id: int = 151656
    vision_start_token_id: int = 151652
    vision_end_token_id: int = 151653
    bos_token_id: int = 151643
    eos_token_id: int = 151645

    # ------------------------------------------------------------------ presets
    @classmethod
    def qwen2_5_vl_3b(cls) -> ModelConfig:
        return cls(
            vision=VisionConfig(out_hidden_size=2048),
            text=TextConfig(),
            tie_word_embeddings=True,
        )

    @classmethod
    def qwen2_5_vl_7b(cls) -> ModelConfig:
        return cls(
            vision=VisionConfig(out_hidden_size=3584),
            text=TextConfig(
                vocab_size=152064,
                hidden_size=3584,
                intermediate_size=18944,
                num_hidden_layers=28,
                num_attention_heads=28,
                num_key_value_heads=4,
            ),
            tie_word_embeddings=False,
        )

    @classmethod
    def tiny(cls, *, vocab_size: int = 512, tie_word_embeddings: bool = True, **vision_overrides: Any) -> ModelConfig:
        """A few-MB random config for tests and the CPU demo.

        The 14 Qwen special tokens sit at the top of the vocabulary in Qwen's own order
        (<|endoftext|>, <|im_start|>, <|im_end|>, ..., <|vision_start|> = +9, ..., <|image_pad|> = +12), the
        layout of the built-in tiny tokenizer (`zoomiqa_jax.processing.tokenizer`).
        """
        vision = dict(
            depth=4,
            hidden_size=64,
            intermediate_size=96,
            num_heads=4,
            window_size=112,
            out_hidden_size=64,
            fullatt_block_indexes=(1, 3),
        )
        vision.update(vision_overrides)
        eot = vocab_size - 14
        return cls(
            vision=VisionConfig(**vision),
            text=TextConfig(
                vocab_size=vocab_size,
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                mrope_section=(2, 3, 3),
                max_position_embeddings=4096,
            ),
            tie_word_embeddings=tie_word_embeddings,
            image_token_id=eot + 12,
            video_token_id=eot + 13,
            vision_start_token_id=eot + 9,
            vision_end_token_id=eot + 10,
            bos_token_id=eot,
            eos_token_id=eot + 2,
        )

    # ------------------------------------------------------------ HF <-> ours
    @classmethod
    def from_hf_dict(cls, d: dict[str, Any], *, source: str = "config") -> ModelConfig:
        """Build from a parsed HF `config.json` (flat 4.x or nested 5.x layout)."""
        model_type = d.get("model_type")
        if model_type not in (None, "qwen2_5_vl"):
            raise ConfigError(f"{source}: model_type is {model_type!r}, expected 'qwen2_5_vl'")
        text_d = dict(d.get("text_config") or {})
        # Flat layout: text fields live at the top level. Nested layout may also repeat some at the top.
        for key in TextConfig.__dataclass_fields__:
            if key not in text_d and key in d:
                text_d[key] = d[key]
        for key in ("rope_theta", "rope_scaling", "rope_parameters", "use_sliding_window", "tie_word_embeddings"):
            if key not in text_d and key in d:
                text_d[key] = d[key]
        if text_d.get("use_sliding_window"):
            raise ConfigError(
                f"{source}: use_sliding_window=true is not supported (no published Qwen2.5-VL checkpoint uses it)"
            )
        rope = text_d.get("rope_parameters") or text_d.get("rope_scaling") or {}
        rope_theta = rope.get("rope_theta", text_d.get("rope_theta", TextConfig.rope_theta))
        mrope = rope.get("mrope_section")
        if mrope is None:
            raise ConfigError(f"{source}: no mrope_section in rope_scaling / rope_parameters")
        head_dim = text_d["hidden_size"] // text_d["num_attention_heads"]
        if 2 * sum(mrope) != head_dim:
            raise ConfigError(
                f"{source}: mrope_section {list(mrope)} sums to {sum(mrope)}, expected head_dim/2 = {head_dim // 2}"
            )
        try:
            text = TextConfig(
                vocab_size=int(text_d["vocab_size"]),
                hidden_size=int(text_d["hidden_size"]),
                intermediate_size=int(text_d["intermediate_size"]),
                num_hidden_layers=int(text_d["num_hidden_layers"]),
                num_attention_heads=int(text_d["num_attention_heads"]),
                num_key_value_heads=int(text_d.get("num_key_value_heads") or text_d["num_attention_heads"]),
                rms_norm_eps=float(text_d.get("rms_norm_eps", 1e-6)),
                rope_theta=float(rope_theta),
                mrope_section=tuple(int(x) for x in mrope),
                max_position_embeddings=int(text_d.get("max_position_embeddings", 128000)),
                hidden_act=str(text_d.get("hidden_act", "silu")),
            )
        except KeyError as e:
            raise ConfigError(f"{source}: missing text field {e.args[0]!r}") from None
        v = dict(d.get("vision_config") or {})
        if not v:
            raise ConfigError(f"{source}: missing vision_config")
        vrope = v.get("rope_parameters") or {}
        try:
            vision = VisionConfig(
                depth=int(v["depth"]),
                hidden_size=int(v["hidden_size"]),
                intermediate_size=int(v["intermediate_size"]),
                num_heads=int(v["num_heads"]),
                in_channels=int(v.get("in_channels", v.get("in_chans", 3))),
                patch_size=int(v.get("patch_size", v.get("spatial_patch_size", 14))),
                temporal_patch_size=int(v.get("temporal_patch_size", 2)),
                spatial_merge_size=int(v.get("spatial_merge_size", 2)),
                window_size=int(v.get("window_size", 112)),
                out_hidden_size=int(v["out_hidden_size"]),
                fullatt_block_indexes=tuple(int(i) for i in v.get("fullatt_block_indexes", ())),
                tokens_per_second=int(v.get("tokens_per_second", 2)),
                rope_theta=float(vrope.get("rope_theta", 10000.0)),
                hidden_act=str(v.get("hidden_act", "silu")),
            )
        except KeyError as e:
            raise ConfigError(f"{source}: missing vision_config field {e.args[0]!r}") from None
        for name, act in (("text", text.hidden_act), ("vision", vision.hidden_act)):
            if act != "silu":
                raise ConfigError(f"{source}: {name} hidden_act {act!r} is not supported (expected 'silu')")
        if vision.out_hidden_size != text.hidden_size:
            raise ConfigError(
                f"{source}: vision out_hidden_size {vision.out_hidden_size} != text hidden_size {text.hidden_size}"
            )
        tie = d.get("tie_word_embeddings", text_d.get("tie_word_embeddings", False))
        if isinstance(d.get("text_config"), dict) and d["text_config"].get("tie_word_embeddings"):
            tie = True
        eos = d.get("eos_token_id", text_d.get("eos_token_id", 151645))
        if isinstance(eos, list):
            eos = eos[0]
        return cls(
            vision=vision,
            text=text,
            tie_word_embeddings=bool(tie),
            image_token_id=int(d.get("image_token_id", 151655)),
            video_token_id=int(d.get("video_token_id", 151656)),
            vision_start_token_id=int(d.get("vision_start_token_id", 151652)),
            vision_end_token_id=int(d.get("vision_end_token_id", 151653)),
            bos_token_id=int(d.get("bos_token_id", text_d.get("bos_token_id", 151643)) or 151643),
            eos_token_id=int(eos),
        )

    @classmethod
    def from_hf_json(cls, path: str | Path) -> ModelConfig:
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such file") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from None
        return cls.from_hf_dict(d, source=str(path))

    def to_hf_dict(self, torch_dtype: str = "bfloat16") -> dict[str, Any]:
        """The published (flat) `config.json` layout."""
        t, v = self.text, self.vision
        return {
            "architectures": ["Qwen2_5_VLForConditionalGeneration"],
            "model_type": "qwen2_5_vl",
            "attention_dropout": 0.0,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "vision_start_token_id": self.vision_start_token_id,
            "vision_end_token_id": self.vision_end_token_id,
            "vision_token_id": self.image_token_id - 1,
            "image_token_id": self.image_token_id,
            "video_token_id": self.video_token_id,
            "hidden_act": t.hidden_act,
            "hidden_size": t.hidden_size,
            "initializer_range": 0.02,
            "intermediate_size": t.intermediate_size,
            "max_position_embeddings": t.max_position_embeddings,
            "max_window_layers": t.num_hidden_layers,
            "num_attention_heads": t.num_attention_heads,
            "num_hidden_layers": t.num_hidden_layers,
            "num_key_value_heads": t.num_key_value_heads,
            "rms_norm_eps": t.rms_norm_eps,
            "rope_theta": t.rope_theta,
            "sliding_window": 32768,
            "tie_word_embeddings": self.tie_word_embeddings,
            "torch_dtype": torch_dtype,
            "use_cache": True,
            "use_sliding_window": False,
            "vocab_size": t.vocab_size,
            "rope_scaling": {"type": "mrope", "mrope_section": list(t.mrope_section)},
            "vision_config": {
                "depth": v.depth,
                "hidden_act": v.hidden_act,
                "hidden_size": v.hidden_size,
                "intermediate_size": v.intermediate_size,
                "num_heads": v.num_heads,
                "in_chans": v.in_channels,
                "out_hidden_size": v.out_hidden_size,
                "patch_size": v.patch_size,
                "spatial_merge_size": v.spatial_merge_size,
                "spatial_patch_size": v.patch_size,
                "window_size": v.window_size,
                "fullatt_block_indexes": list(v.fullatt_block_indexes),
                "tokens_per_second": v.tokens_per_second,
                "temporal_patch_size": v.temporal_patch_size,
            },
        }
