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

from zoomiqa_jax.config_fields import ConfigError, Fields, check_positive_floats

# The dtype names the configs and CLIs accept for compute and parameters (`jnp.dtype` reads each).
DTYPES = ("float32", "bfloat16", "float16")
# Rematerialisation of the decoder layers and vision blocks (`model.text.remat_policy` maps a name to its
# `jax.checkpoint` policy): "none"; "full" recomputes everything in the backward
# (`jax.checkpoint_policies.nothing_saveable`); the others name policies in `jax.checkpoint_policies`.
REMAT_POLICIES = ("none", "full", "dots_saveable", "dots_with_no_batch_dims_saveable", "everything_saveable")
# The inference protocols (`inference.protocol.PROTOCOLS`, spelled here so that the CLIs' --help imports no jax).
PROTOCOL_CHOICES = ("official", "strict")
# The `--prompt` names of `zoomiqa score` / `eval` -> the inference task `inference.tasks.run_task` runs
# ("zoomiqa": the two-round Zoom-IQA protocol; the others single-turn, `inference.single_turn`).
PROMPT_TASKS = {"zoomiqa": "zoomiqa", "qinsight": "qinsight_score", "qinsight-degradation": "qinsight_degradation",
                "vqr1": "vqr1_score"}


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

    def __post_init__(self) -> None:
        check_positive_floats(self)

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

    def __post_init__(self) -> None:
        check_positive_floats(self)

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
        """Build from a parsed HF `config.json` (flat 4.x or nested 5.x layout). Every field read is type- and
        range-checked: a fault raises ConfigError naming `source` and the field."""
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: expected a JSON object, got {type(d).__name__}")
        top = Fields(d, source)
        model_type = d.get("model_type")
        if model_type not in (None, "qwen2_5_vl"):
            raise ConfigError(f"{source}: model_type is {model_type!r}, expected 'qwen2_5_vl'")
        nested = top.mapping("text_config")
        text_d = dict(nested)
        names = {k: f"text_config.{k}" for k in nested}
        # Flat layout: text fields live at the top level. Nested layout may also repeat some at the top.
        for key in (*TextConfig.__dataclass_fields__, "rope_scaling", "rope_parameters", "use_sliding_window",
                    "tie_word_embeddings"):
            if text_d.get(key) is None and d.get(key) is not None:
                text_d[key], names[key] = d[key], key
        t = Fields(text_d, source, names=names)
        if t.bool("use_sliding_window", False):
            raise ConfigError(
                f"{source}: use_sliding_window=true is not supported (no published Qwen2.5-VL checkpoint uses it)"
            )
        rope_key = "rope_parameters" if text_d.get("rope_parameters") else "rope_scaling"
        rope = Fields(t.mapping(rope_key), source, prefix=t.name(rope_key) + ".")
        if rope.data.get("mrope_section") is None:
            raise ConfigError(f"{source}: no mrope_section in rope_scaling / rope_parameters")
        text = TextConfig(
            vocab_size=t.int("vocab_size"),
            hidden_size=t.int("hidden_size"),
            intermediate_size=t.int("intermediate_size"),
            num_hidden_layers=t.int("num_hidden_layers"),
            num_attention_heads=t.int("num_attention_heads"),
            num_key_value_heads=t.int("num_key_value_heads", t.int("num_attention_heads")),
            rms_norm_eps=t.float("rms_norm_eps", 1e-6),
            rope_theta=rope.float("rope_theta", t.float("rope_theta", TextConfig.rope_theta)),
            mrope_section=rope.ints("mrope_section", minimum=1),  # type: ignore[arg-type]
            max_position_embeddings=t.int("max_position_embeddings", 128000),
            hidden_act=t.str("hidden_act", "silu"),
        )
        if text.hidden_size % text.num_attention_heads or text.num_attention_heads % text.num_key_value_heads:
            raise ConfigError(f"{source}: text hidden_size {text.hidden_size}, num_attention_heads "
                              f"{text.num_attention_heads}, num_key_value_heads {text.num_key_value_heads}: each "
                              "must divide the one before")
        if len(text.mrope_section) != 3 or 2 * sum(text.mrope_section) != text.head_dim:
            raise ConfigError(f"{source}: mrope_section {list(text.mrope_section)} sums to {sum(text.mrope_section)}, "
                              f"expected 3 parts summing to head_dim/2 = {text.head_dim // 2}")
        if not top.mapping("vision_config"):
            raise ConfigError(f"{source}: missing vision_config")
        v = Fields(top.mapping("vision_config"), source, prefix="vision_config.")
        vrope = Fields(v.mapping("rope_parameters"), source, prefix="vision_config.rope_parameters.")
        channels = "in_channels" if v.data.get("in_channels") is not None else "in_chans"
        patch = "patch_size" if v.data.get("patch_size") is not None else "spatial_patch_size"
        vision = VisionConfig(
            depth=v.int("depth"),
            hidden_size=v.int("hidden_size"),
            intermediate_size=v.int("intermediate_size"),
            num_heads=v.int("num_heads"),
            in_channels=v.int(channels, 3),
            patch_size=v.int(patch, 14),
            temporal_patch_size=v.int("temporal_patch_size", 2),
            spatial_merge_size=v.int("spatial_merge_size", 2),
            window_size=v.int("window_size", 112),
            out_hidden_size=v.int("out_hidden_size"),
            fullatt_block_indexes=v.ints("fullatt_block_indexes", ()),
            tokens_per_second=v.int("tokens_per_second", 2, minimum=0),
            rope_theta=vrope.float("rope_theta", 10000.0),
            hidden_act=v.str("hidden_act", "silu"),
        )
        if vision.hidden_size % vision.num_heads:
            raise ConfigError(f"{source}: vision_config.hidden_size {vision.hidden_size} is not divisible by "
                              f"vision_config.num_heads {vision.num_heads}")
        if any(i >= vision.depth for i in vision.fullatt_block_indexes):
            raise ConfigError(f"{source}: vision_config.fullatt_block_indexes {list(vision.fullatt_block_indexes)} "
                              f"must be block indexes < depth {vision.depth}")
        for name, act in (("text", text.hidden_act), ("vision", vision.hidden_act)):
            if act != "silu":
                raise ConfigError(f"{source}: {name} hidden_act {act!r} is not supported (expected 'silu')")
        if vision.out_hidden_size != text.hidden_size:
            raise ConfigError(
                f"{source}: vision out_hidden_size {vision.out_hidden_size} != text hidden_size {text.hidden_size}"
            )
        tie = top.bool("tie_word_embeddings", t.bool("tie_word_embeddings", False))
        if Fields(nested, source, prefix="text_config.").bool("tie_word_embeddings", False):
            tie = True
        bos_src = top if d.get("bos_token_id") is not None else t
        eos_src = top if d.get("eos_token_id") is not None else t
        eos = eos_src.data.get("eos_token_id")
        if isinstance(eos, list):  # the generation-config form: the first id ends a reply
            eos_src = Fields({"eos_token_id": eos[0] if eos else None}, source,
                              names={"eos_token_id": eos_src.name("eos_token_id") + "[0]"})
        return cls(
            vision=vision,
            text=text,
            tie_word_embeddings=tie,
            image_token_id=top.int("image_token_id", 151655, minimum=0),
            video_token_id=top.int("video_token_id", 151656, minimum=0),
            vision_start_token_id=top.int("vision_start_token_id", 151652, minimum=0),
            vision_end_token_id=top.int("vision_end_token_id", 151653, minimum=0),
            bos_token_id=bos_src.int("bos_token_id", 151643, minimum=0),
            eos_token_id=eos_src.int("eos_token_id", 151645, minimum=0),
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
