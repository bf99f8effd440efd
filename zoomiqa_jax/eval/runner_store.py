"""The run store of `zoomiqa eval`: the config hash, resumable predictions*.jsonl, run_config.json and the
environment record (see `zoomiqa_jax.eval.runner` for the file layout and the resume rules)."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class ResumeError(RuntimeError):
    """predictions.jsonl in --out was written under another config, or cannot be read."""


def config_hash(config: dict[str, Any]) -> str:
    """First 16 hex digits of the SHA-256 of the config as sorted-key JSON."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def checkpoint_fingerprint(path: str | Path, exclude: str | Path | None = None) -> dict[str, Any]:
    """Resolved path, file count and total bytes of a checkpoint directory: a rewritten checkpoint changes the
    config hash even at the same path (cheap: sizes only, no content hashing). Files under `exclude` (the eval's
    own output folder, when it sits inside the checkpoint) do not count."""
    root = Path(path).resolve()
    skip = Path(exclude).resolve() if exclude is not None else None
    files = [f for f in root.rglob("*") if f.is_file() and not (skip is not None and f.is_relative_to(skip))]
    return {"path": str(root), "n_files": len(files), "bytes": sum(f.stat().st_size for f in files)}


def _diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    keys = sorted(set(old) | set(new))
    changes = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]
    return "; ".join(changes) or "(no field differs; the hash format changed)"


def predictions_file(out: Path, shard_index: int = 0, shard_count: int = 1) -> Path:
    """predictions.jsonl for one shard, else predictions-IIIII-of-NNNNN.jsonl (one file per writer)."""
    if shard_count == 1:
        return out / "predictions.jsonl"
    return out / f"predictions-{shard_index:05d}-of-{shard_count:05d}.jsonl"


def load_predictions(out: Path, digest: str, repair: Path | None = None) -> dict[tuple[str, str], dict[str, Any]]:
    """Every finished prediction under `out` (all predictions*.jsonl files), keyed by (dataset, key).

    A line of another config raises ResumeError naming file and line. A broken LAST line (an interrupted
    write) is skipped; in the file `repair` (the caller's own) it is also cut off, so the item is redone.
    """
    done: dict[tuple[str, str], dict[str, Any]] = {}
    for file in sorted(out.glob("predictions*.jsonl")):
        lines = file.read_text(encoding="utf-8").split("\n")
        kept = []
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                if lineno >= len(lines) - 1:
                    break
                raise ResumeError(f"{file}:{lineno}: unreadable line ({err.msg}); fix or delete the file") from None
            if row.get("config_hash") != digest:
                raise ResumeError(f"{file}:{lineno}: written under config {row.get('config_hash')}, this run is "
                                  f"{digest}; refusing to mix them: use another --out")
            done[(row["dataset"], row["key"])] = row
            kept.append(line)
        if repair is not None and file.resolve() == repair.resolve() and len(kept) < sum(1 for x in lines if x):
            file.write_text("".join(k + "\n" for k in kept), encoding="utf-8")
    return done


def open_store(
    out: Path, config: dict[str, Any], own: Path | None = None
) -> tuple[str, dict[tuple[str, str], dict[str, Any]]]:
    """Check `out` against `config` and load the finished predictions, keyed by (dataset, key).

    Writes run_config.json (atomically) for a fresh directory. Raises ResumeError when the stored config hash
    differs. `own` is this writer's predictions file (default predictions.jsonl), the only one repaired.
    """
    digest = config_hash(config)
    header = out / "run_config.json"
    if header.is_file():
        stored = json.loads(header.read_text())
        if stored.get("config_hash") != digest:
            raise ResumeError(
                f"{header}: --out holds results of config {stored.get('config_hash')}, this run is {digest} "
                f"({_diff(stored.get('config', {}), config)}); refusing to mix them: use another --out"
            )
    else:
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / f".run_config.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({"config_hash": digest, "config": config}, indent=2) + "\n")
        tmp.replace(header)
    return digest, load_predictions(out, digest, repair=own or predictions_file(out))


def environment(argv: Sequence[str], extra: dict[str, Any]) -> dict[str, Any]:
    """Versions, devices and the options outside the hash."""
    import flax
    import jax

    return {"jax": jax.__version__, "flax": flax.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "devices": [str(d) for d in jax.devices()],
            "process_count": jax.process_count(), "argv": list(argv),
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra}
