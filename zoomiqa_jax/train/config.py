"""The configuration of a training run: one dataclass tree, read from YAML, `key=value` overrides, written back.

    cfg = load_train_config("configs/sft_tiny.yaml", ["optim.lr=1e-4", "parallel.mesh=[2,4,1]"])
    save_train_config(cfg, run_dir / "config.yaml")        # the config in force, beside every checkpoint

Sections (every field is documented where it is declared):

    model       which network (a preset name or an HF config.json), compute / parameter dtypes, initial weights
    data        trajectory files, padding buckets, the (global) micro-batch size, the data seed
    optim       AdamW + warm-up + linear|cosine decay, clipping, accumulation (see `zoomiqa_jax.train.optim`)
    parallel    the (data, fsdp, tensor) mesh, the remat policy, scan over layers
    checkpoint  where, how often, how many to keep, async or not (see `zoomiqa_jax.train.checkpointing`)
    run         length (optimizer steps, or epochs), logging cadence, the non-finite-loss budget, the output dir

Counting: `data.batch_size` samples form one micro-batch (the global batch over all devices); `optim.grad_accum`
micro-batches form one optimizer step; `run.steps` counts optimizer steps. Unknown keys and values of the wrong type
are errors that name the key and the file (or the command-line override) they came from.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from zoomiqa_jax.config import DTYPES, REMAT_POLICIES, ConfigError, ModelConfig
from zoomiqa_jax.processing.image import MAX_PIXELS

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_PRESETS = ("tiny", "qwen2_5_vl_3b", "qwen2_5_vl_7b")
DECAYS = ("linear", "cosine")


def resolve_path(path: str | Path) -> Path:
    """`path` as given when it exists, else relative to the repository root (configs name files such as
    `zoomiqa_jax/assets/demo_prompts.yaml` from the root, so they work from any directory)."""
    path = Path(path)
    if not path.exists() and not path.is_absolute() and (REPO_ROOT / path).exists():
        return REPO_ROOT / path
    return path


@dataclasses.dataclass
class ModelSection:
    config: str = "tiny"  # a preset (MODEL_PRESETS) or the path of an HF config.json (or its directory)
    weights: str = ""  # HF or orbax checkpoint to start from; "" initialises randomly from `run.seed`
    dtype: str = "bfloat16"  # compute dtype of the forward / backward
    param_dtype: str = "float32"  # master weights (and AdamW moments); "bfloat16" halves memory for large models
    tokenizer: str = ""  # tokenizer directory; "" = the weights' directory, or the built-in one for the tiny preset

    def resolve(self) -> ModelConfig:
        """The ModelConfig this section names."""
        if self.config in MODEL_PRESETS:
            return getattr(ModelConfig, self.config)()
        path = resolve_path(self.config)  # configs/models/... from anywhere
        if not path.exists():
            raise ConfigError(f"model.config: {self.config!r} is neither a preset {MODEL_PRESETS} nor a file")
        return ModelConfig.from_hf_json(path)


@dataclasses.dataclass
class DataSection:
    train: str = ""  # JSONL trajectory file for training ("" = synthetic demo data)
    eval: str = ""  # held-out JSONL trajectory file ("" = none)
    image_root: str = ""  # image paths in the JSONL are relative to this ("" = the JSONL's directory)
    seq_buckets: tuple[int, ...] = (512, 1024, 2048)  # token lengths a sequence is padded up to
    max_pixels: int = MAX_PIXELS  # smart_resize area budget per image; default: what inference uses (28*28*1280)
    batch_size: int = 2  # samples per micro-batch, over all devices
    seed: int = 0  # shuffling seed
    num_workers: int = 0  # grain worker processes (0 = in the main process)
    group_by_length: bool = True  # batches of examples from the same sequence bucket (train.sft_loop.SFTStream)
    per_round: bool = True  # one example per round (stage 1 sees its image); false: one stage-2 sequence per crop
    prompt_file: str = ""  # YAML/JSON prompt overrides (processing.prompts); "" = the built-in Zoom-IQA prompts
    synthetic_images: int = 256  # with train "": how many synthetic degraded images to generate
    synthetic_size: int = 112  # with train "": short side of the synthetic images, pixels
    # Bad records (missing / undecodable image, score not in [1, 5], malformed line) are skipped and reported
    # (train.data_checks); the run stops when more than this share of the records is bad. 1%: public IQA sets
    # hold a few broken files, while a larger share means a wrong image_root, a partial download or a label
    # scale other than [1, 5], which training on the rest would hide. 0 = stop at the first bad record.
    max_bad_fraction: float = 0.01


@dataclasses.dataclass
class OptimSection:
    lr: float = 2.5e-6  # peak learning rate
    warmup_ratio: float = 0.3  # fraction of the optimizer steps spent warming up linearly from 0
    decay: str = "cosine"  # after warm-up: "linear" or "cosine" down to lr * end_lr_ratio
    end_lr_ratio: float = 0.0
    weight_decay: float = 0.0  # decoupled (AdamW); masked, see zoomiqa_jax.train.optim.decay_mask
    decay_embeddings: bool = True  # embeddings (and a tied LM head) get weight decay, as in HF Trainer
    clip_norm: float = 1.0  # global-norm clip of the accumulated gradient (0 = off)
    grad_accum: int = 8  # micro-batches per optimizer step
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8


@dataclasses.dataclass
class ParallelSection:
    mesh: tuple[int, ...] = (1, -1, 1)  # (data, fsdp, tensor); one -1 takes the remaining devices (FSDP default)
    remat: str = "none"  # one of REMAT_POLICIES
    scan_layers: bool = False  # jax.lax.scan over the decoder layers (one compiled layer)


@dataclasses.dataclass
class CheckpointSection:
    dir: str = ""  # "" = <run.out_dir>/checkpoints
    save_every: int = 500  # optimizer steps between checkpoints (the last step is always saved)
    keep: int = 3  # newest checkpoints kept; older ones are deleted
    async_save: bool = True  # write in a background thread while training continues


@dataclasses.dataclass
class RunSection:
    steps: int = 0  # optimizer steps; 0 = derive from `epochs`
    epochs: float = 1.0  # passes over the training data, used when steps == 0
    log_every: int = 10  # optimizer steps between metric lines
    max_nonfinite: int = 10  # stop after this many skipped (non-finite) updates
    seed: int = 0  # parameter init and dropout / sampling key
    out_dir: str = "runs/sft"  # logs, TensorBoard events, checkpoints
    export_hf: bool = True  # write the final weights as an HF checkpoint to <out_dir>/final


@dataclasses.dataclass
class TrainConfig:
    """A whole training run."""

    model: ModelSection = dataclasses.field(default_factory=ModelSection)
    data: DataSection = dataclasses.field(default_factory=DataSection)
    optim: OptimSection = dataclasses.field(default_factory=OptimSection)
    parallel: ParallelSection = dataclasses.field(default_factory=ParallelSection)
    checkpoint: CheckpointSection = dataclasses.field(default_factory=CheckpointSection)
    run: RunSection = dataclasses.field(default_factory=RunSection)

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.checkpoint.dir or Path(self.run.out_dir) / "checkpoints")

    def optimizer_steps(self, num_examples: int) -> int:
        """`run.steps`, or ceil(epochs * num_examples / (batch_size * grad_accum)) when it is 0."""
        if self.run.steps > 0:
            return self.run.steps
        per_step = self.data.batch_size * self.optim.grad_accum
        return max(1, math.ceil(self.run.epochs * num_examples / per_step))


def check_finite(cfg: Any, where: str = "config", prefix: str = "") -> None:
    """Every float field (and float tuple) of the dataclass tree `cfg` is finite: `optim.lr=inf` or a NaN
    weight would pass range checks such as `lr > 0` (inf) and poison the run. ConfigError names the key."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value, key = getattr(cfg, f.name), f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            check_finite(value, where, f"{key}.")
        elif hints[f.name] is float or (typing.get_origin(hints[f.name]) is tuple
                                        and typing.get_args(hints[f.name])[0] is float):
            values = value if isinstance(value, tuple) else (value,)
            if not all(math.isfinite(v) for v in values):
                raise ConfigError(f"{where}: {key} must be a finite number, got {value!r}")


def validate(cfg: TrainConfig, where: str = "config") -> None:
    """Check values that types alone do not pin; raise ConfigError naming the key."""
    check_finite(cfg, where)
    checks = [
        ("model.dtype", cfg.model.dtype in DTYPES, f"one of {DTYPES}"),
        ("model.param_dtype", cfg.model.param_dtype in DTYPES, f"one of {DTYPES}"),
        ("optim.decay", cfg.optim.decay in DECAYS, f"one of {DECAYS}"),
        ("optim.lr", cfg.optim.lr > 0, "> 0"),
        ("optim.warmup_ratio", 0 <= cfg.optim.warmup_ratio < 1, "in [0, 1)"),
        ("optim.end_lr_ratio", 0 <= cfg.optim.end_lr_ratio <= 1, "in [0, 1]"),
        ("optim.weight_decay", cfg.optim.weight_decay >= 0, ">= 0"),
        ("optim.clip_norm", cfg.optim.clip_norm >= 0, ">= 0"),
        ("optim.grad_accum", cfg.optim.grad_accum >= 1, ">= 1"),
        ("data.batch_size", cfg.data.batch_size >= 1, ">= 1"),
        ("data.synthetic_images", cfg.data.synthetic_images >= 2, ">= 2"),
        ("data.synthetic_size", cfg.data.synthetic_size >= 28, ">= 28"),
        ("data.max_bad_fraction", 0 <= cfg.data.max_bad_fraction <= 1, "in [0, 1]"),
        ("data.seq_buckets", len(cfg.data.seq_buckets) > 0 and min(cfg.data.seq_buckets) > 0, "positive lengths"),
        ("parallel.mesh", len(cfg.parallel.mesh) == 3 and all(s == -1 or s >= 1 for s in cfg.parallel.mesh)
         and cfg.parallel.mesh.count(-1) <= 1, "(data, fsdp, tensor) sizes >= 1, at most one -1"),
        ("parallel.remat", cfg.parallel.remat in REMAT_POLICIES, f"one of {REMAT_POLICIES}"),
        ("checkpoint.save_every", cfg.checkpoint.save_every >= 1, ">= 1"),
        ("checkpoint.keep", cfg.checkpoint.keep >= 1, ">= 1"),
        ("run.steps", cfg.run.steps >= 0, ">= 0"),
        ("run.epochs", cfg.run.steps > 0 or cfg.run.epochs > 0, "> 0 when run.steps is 0"),
        ("run.log_every", cfg.run.log_every >= 1, ">= 1"),
        ("run.max_nonfinite", cfg.run.max_nonfinite >= 0, ">= 0"),
    ]
    for key, ok, expected in checks:
        if not ok:
            section, name = key.split(".")
            raise ConfigError(f"{where}: {key} must be {expected}, got {getattr(getattr(cfg, section), name)!r}")


# ------------------------------------------------------------------------------------------ typed parsing
def _coerce(value: Any, tp: Any, key: str, where: str) -> Any:
    """`value` (from YAML or an override) as the field type `tp`; ConfigError naming key and source otherwise."""

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{where}: {key} expects {expected}, got {value!r}")

    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise bad("a boolean (true/false)")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad("an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "2.5e-6" (no dot before the e) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise bad("a number")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        if value is None:
            return ""
        raise bad("a string")
    if typing.get_origin(tp) is tuple:
        inner = typing.get_args(tp)[0]
        if isinstance(value, str):
            value = [v for v in value.replace("(", "").replace(")", "").split(",") if v.strip()]
            value = [yaml.safe_load(v) for v in value]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise bad("a list")
        return tuple(_coerce(v, inner, key, where) for v in value)
    raise ConfigError(f"{where}: {key} has an unsupported type {tp}")  # pragma: no cover


def _fill(cls: type, data: Any, prefix: str, where: str) -> Any:
    """Build the dataclass `cls` from a nested dict, rejecting unknown keys."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {prefix or 'the top level'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        names = [f"{prefix}{k}" for k in unknown]
        raise ConfigError(f"{where}: unknown key(s) {names}; known under {prefix or 'the top level'}: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _fill(tp, value, f"{prefix}{name}.", where)
        else:
            kwargs[name] = _coerce(value, tp, f"{prefix}{name}", where)
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any], where: str = "config", cls: type = TrainConfig) -> Any:
    """A TrainConfig (or the subclass `cls`) from a nested dict (as read from YAML); missing keys keep their
    defaults. Validated (`cls.validate_extra(cfg, where)` too, when the subclass defines it)."""
    cfg = _fill(cls, data, "", where)
    validate(cfg, where)
    extra = getattr(cls, "validate_extra", None)
    if extra is not None:
        extra(cfg, where)
    return cfg


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """Nested plain dict (tuples as lists), the inverse of `config_from_dict`."""

    def plain(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        if isinstance(x, (tuple, list)):
            return [plain(v) for v in x]
        return x

    return plain(dataclasses.asdict(cfg))


def apply_overrides(data: dict[str, Any], overrides: Sequence[str], cls: type = TrainConfig) -> dict[str, Any]:
    """Set `section.key=value` pairs in the nested dict `data` (values parsed as YAML scalars / lists).

    Unknown sections or keys are rejected here already, naming the override."""
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    sections = {f.name: typing.get_type_hints(cls)[f.name] for f in dataclasses.fields(cls)}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. optim.lr=1e-5")
        key, raw = item.split("=", 1)
        key = key.strip()
        parts = key.split(".")
        if len(parts) != 2 or parts[0] not in sections:
            raise ConfigError(f"override {item!r}: unknown key {key!r}; keys are section.name with sections "
                              f"{sorted(sections)}")
        section, name = parts
        known = [f.name for f in dataclasses.fields(sections[section])]
        if name not in known:
            raise ConfigError(f"override {item!r}: unknown key {key!r}; keys in {section}: {known}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        tp = typing.get_type_hints(sections[section])[name]
        if tp is str:
            value = raw  # strings verbatim: "001" stays "001"
        node = data.setdefault(section, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: section {section!r} is not a mapping in the config file")
        node[name] = _coerce(value, tp, key, f"override {item!r}")
    return data


def load_train_config(path: str | Path | None = None, overrides: Sequence[str] = (), cls: type = TrainConfig) -> Any:
    """Read the YAML file at `path` (None: all defaults), apply `key=value` overrides, validate. `cls` is
    TrainConfig or a subclass with more sections (`zoomiqa_jax.train.grpo_config.GrpoTrainConfig`)."""
    data: dict[str, Any] = {}
    where = "config"
    if path is not None:
        where = str(path)
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
        config_from_dict(data, where, cls)  # errors in the file name the file, not an override
    if overrides:
        data = apply_overrides(data, overrides, cls)
        where = f"{where} with overrides {list(overrides)}"
    return config_from_dict(data, where, cls)


def config_yaml(cfg: TrainConfig, header: str = "") -> str:
    """The YAML text of `cfg` (every field, defaults included), with an optional comment header."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    body = yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None)
    return "\n".join(lines + [body]) if lines else body


def save_train_config(cfg: TrainConfig, path: str | Path, header: str = "") -> Path:
    """Write `cfg` as YAML to `path` (atomically: a temporary file, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(config_yaml(cfg, header))
    tmp.replace(path)
    return path
