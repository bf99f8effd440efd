"""Typed reads of JSON config files (HF `config.json`): every fault names the file and the field.

    f = Fields(json.loads(path.read_text()), source=str(path), prefix="vision_config.")
    depth = f.int("depth")                 # ConfigError: "<path>: field 'vision_config.depth' must be an integer
                                           #               >= 1, got 'two' (str)"
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any


class ConfigError(ValueError):
    """A config file or dict does not describe a Qwen2.5-VL model we can build."""


def check_positive_floats(cfg: Any) -> None:
    """Every float field of the config dataclass `cfg` is finite and > 0 (an epsilon or a RoPE base)."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, float) and not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{type(cfg).__name__}.{f.name} must be a finite number > 0, got {value!r}")


REQUIRED = object()


class Fields:
    """Typed reads of one section of a config.json: wrong types, non-integers, out-of-range or non-finite
    values raise ConfigError naming the file and the field as it is spelled there (`text_config.x`)."""

    def __init__(self, data: dict[str, Any], source: str, prefix: str = "", names: dict[str, str] | None = None):
        self.data, self.source, self.prefix, self.names = data, source, prefix, names or {}

    def name(self, key: str) -> str:
        return self.names.get(key, self.prefix + key)

    def _get(self, key: str, default: Any) -> Any:
        value = self.data.get(key)
        if value is None:  # JSON null counts as absent
            if default is REQUIRED:
                raise ConfigError(f"{self.source}: missing field {self.name(key)!r}")
            return default
        return value

    def _bad(self, key: str, value: Any, expected: str) -> ConfigError:
        return ConfigError(f"{self.source}: field {self.name(key)!r} must be {expected}, "
                           f"got {value!r} ({type(value).__name__})")

    def int(self, key: str, default: Any = REQUIRED, minimum: int = 1) -> int:
        value = self._get(key, default)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self._bad(key, value, f"an integer >= {minimum}")
        return value

    def ints(self, key: str, default: Any = REQUIRED, minimum: int = 0) -> tuple[int, ...]:
        value = self._get(key, default)
        if not isinstance(value, (list, tuple)) or not all(
            (type(v) is int or (type(v) is float and v.is_integer())) and v >= minimum for v in value
        ):
            raise self._bad(key, value, f"a list of integers >= {minimum}")
        return tuple(int(v) for v in value)

    def float(self, key: str, default: Any = REQUIRED) -> float:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
            raise self._bad(key, value, "a finite number > 0")
        return float(value)

    def bool(self, key: str, default: Any = REQUIRED) -> bool:
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise self._bad(key, value, "true or false")
        return value

    def str(self, key: str, default: Any = REQUIRED) -> str:
        value = self._get(key, default)
        if not isinstance(value, str):
            raise self._bad(key, value, "a string")
        return value

    def mapping(self, key: str) -> dict[str, Any]:
        value = self._get(key, {})
        if not isinstance(value, dict):
            raise self._bad(key, value, "a JSON object")
        return value
