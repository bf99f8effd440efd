"""Read and write safetensors files in NumPy, one tensor at a time, without torch or the safetensors package.

The format: an 8-byte little-endian header length N, N bytes of JSON
`{"name": {"dtype": "BF16", "shape": [...], "data_offsets": [begin, end]}, ..., "__metadata__": {...}}`
(padded with spaces to a multiple of 8), then the raw little-endian bytes of every tensor, back to back, with
offsets counted from the end of the header.

Reading maps each file with `mmap` and copies one tensor out per `get_tensor` call; the pages just read are
then dropped from this process (`MADV_DONTNEED`), so a reader costs about one tensor on top of what the caller
keeps. Writing takes the tensor list (name, shape, dtype) first, so each header is known before any data,
then one array at a time.

A checkpoint directory holds either `model.safetensors` or shards `model-00001-of-0000N.safetensors` listed in
`model.safetensors.index.json` (`{"metadata": {"total_size": bytes}, "weight_map": {name: shard file}}`),
as written by transformers' `save_pretrained`.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import ml_dtypes
import numpy as np

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
DEFAULT_MAX_SHARD_BYTES = 4 * 1000**3  # transformers' default "5GB" style: decimal units

# safetensors dtype codes <-> NumPy dtypes (always little-endian on disk).
_CODES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype("<u1"),
    "I8": np.dtype("<i1"),
    "U16": np.dtype("<u2"),
    "I16": np.dtype("<i2"),
    "U32": np.dtype("<u4"),
    "I32": np.dtype("<i4"),
    "U64": np.dtype("<u8"),
    "I64": np.dtype("<i8"),
    "F16": np.dtype("<f2"),
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
}
_NAMES = {dt: code for code, dt in _CODES.items()}
_MAX_HEADER = 100 * 1024 * 1024


class SafetensorsError(ValueError):
    """A safetensors file or index is malformed or inconsistent (the message names the file and key)."""


class TensorSpec(NamedTuple):
    """What a tensor will be: its name, shape and NumPy dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize  # Python ints: no overflow on hostile headers


def dtype_code(dtype: Any) -> str:
    """NumPy dtype -> safetensors code (`F32`, `BF16`, ...)."""
    dt = np.dtype(dtype).newbyteorder("<") if np.dtype(dtype).byteorder == ">" else np.dtype(dtype)
    try:
        return _NAMES[dt]
    except KeyError:
        raise SafetensorsError(f"dtype {dt} has no safetensors code (supported: {sorted(_CODES)})") from None


def numpy_dtype(code: str) -> np.dtype:
    """safetensors code -> NumPy dtype."""
    try:
        return _CODES[code]
    except KeyError:
        raise SafetensorsError(
            f"safetensors dtype {code!r} is not supported (supported: {sorted(_CODES)})"
        ) from None


# ---------------------------------------------------------------------------------------------------- reading
class SafetensorsFile:
    """One `.safetensors` file, memory-mapped; `get_tensor` returns an owned copy of one tensor."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._file = open(self.path, "rb")  # noqa: SIM115 (closed in close())
        except FileNotFoundError:
            raise SafetensorsError(f"{self.path}: no such file") from None
        self._mm: mmap.mmap | None = None
        try:
            self._read_header()
        except BaseException:
            self._file.close()
            raise

    def _read_header(self) -> None:
        size = os.fstat(self._file.fileno()).st_size
        raw = self._file.read(8)
        if len(raw) < 8:
            raise SafetensorsError(f"{self.path}: {size} bytes, too short for a safetensors header")
        (n,) = struct.unpack("<Q", raw)
        if n > min(size - 8, _MAX_HEADER):
            raise SafetensorsError(f"{self.path}: header length {n} does not fit the file size {size}")
        try:
            header = json.loads(self._file.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SafetensorsError(f"{self.path}: header is not valid JSON ({e})") from None
        if not isinstance(header, dict):
            raise SafetensorsError(f"{self.path}: header is a JSON {type(header).__name__}, expected an object")
        self.metadata: dict[str, str] = header.pop("__metadata__", None) or {}
        self._start = 8 + n
        self.specs: dict[str, TensorSpec] = {}
        self._offsets: dict[str, tuple[int, int]] = {}
        data_len = size - self._start
        for name, info in header.items():
            try:
                shape = tuple(info["shape"])
                if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
                    raise ValueError("shape must be a list of non-negative integers")
                spec = TensorSpec(name, shape, numpy_dtype(info["dtype"]))
                begin, end = (int(x) for x in info["data_offsets"])
            except (KeyError, TypeError, ValueError, OverflowError) as e:
                raise SafetensorsError(f"{self.path}: bad header entry {name!r}: {info!r} ({e})") from None
            if end - begin != spec.nbytes or begin < 0 or end > data_len:
                raise SafetensorsError(
                    f"{self.path}: tensor {name!r} has offsets [{begin}, {end}] for {spec.nbytes} bytes of "
                    f"{info['dtype']}{list(spec.shape)}; data section is {data_len} bytes"
                )
            self.specs[name] = spec
            self._offsets[name] = (begin, end)

    def keys(self) -> list[str]:
        return list(self.specs)

    def get_tensor(self, name: str) -> np.ndarray:
        """A writable NumPy copy of tensor `name`; the mapped pages are released right after."""
        if name not in self.specs:
            raise KeyError(f"{self.path}: no tensor {name!r}")
        spec = self.specs[name]
        begin, end = self._offsets[name]
        if end == begin:
            return np.zeros(spec.shape, spec.dtype)
        if self._mm is None:
            self._mm = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        lo, hi = self._start + begin, self._start + end
        count = int(np.prod(spec.shape, dtype=np.int64))
        out = np.frombuffer(self._mm, dtype=spec.dtype, count=count, offset=lo).reshape(spec.shape).copy()
        self._release(lo, hi)
        return out

    def _release(self, lo: int, hi: int) -> None:
        """Drop the pages of [lo, hi) from this process's resident set (they stay in the page cache)."""
        if not hasattr(mmap, "MADV_DONTNEED") or self._mm is None:
            return
        page = mmap.PAGESIZE
        start = lo - lo % page
        try:
            self._mm.madvise(mmap.MADV_DONTNEED, start, hi - start)
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        if self._mm is not None:
            self._mm.close()
            self._mm = None
        self._file.close()

    def __enter__(self) -> SafetensorsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CheckpointReader:
    """All tensors of an HF checkpoint directory (single file or index + shards), read lazily.

    `path` may also be a single `.safetensors` file. Every shard header is read up front (small), tensor data
    only on `get_tensor`.
    """

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        self.path = path
        self.files: dict[str, SafetensorsFile] = {}
        self.weight_map: dict[str, str] = {}
        try:
            self._open(path)
        except BaseException:
            self.close()
            raise

    def _open(self, path: Path) -> None:
        if path.is_file():
            self._add_file(path.name, path)
        elif (path / INDEX_FILE).is_file():
            self._read_index(path / INDEX_FILE)
        elif (path / SINGLE_FILE).is_file():
            self._add_file(SINGLE_FILE, path / SINGLE_FILE)
        elif path.is_dir():
            found = sorted(p.name for p in path.glob("*.safetensors"))
            raise SafetensorsError(
                f"{path}: expected {SINGLE_FILE} or {INDEX_FILE}; found "
                + (", ".join(found) if found else "no .safetensors files")
            )
        else:
            raise SafetensorsError(f"{path}: no such file or directory")

    def _add_file(self, fname: str, fpath: Path) -> SafetensorsFile:
        f = SafetensorsFile(fpath)
        self.files[fname] = f
        for name in f.keys():
            if name in self.weight_map:
                raise SafetensorsError(f"{fpath}: tensor {name!r} also appears in {self.weight_map[name]}")
            self.weight_map[name] = fname
        return f

    def _read_index(self, index_path: Path) -> None:
        try:
            index = json.loads(index_path.read_text())
            weight_map: dict[str, str] = dict(index["weight_map"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise SafetensorsError(f"{index_path}: not a safetensors index with a weight_map ({e})") from None
        problems = []
        for fname in sorted(set(weight_map.values())):
            fpath = index_path.parent / fname
            if not fpath.is_file():
                problems.append(f"shard {fname} listed in the index does not exist")
                continue
            f = self._add_file(fname, fpath)
            listed = {k for k, v in weight_map.items() if v == fname}
            have = set(f.keys())
            problems += [f"{k}: index says {fname}, but that shard lacks it" for k in sorted(listed - have)]
            problems += [f"{k}: in {fname} but not in the index" for k in sorted(have - listed)]
        if problems:
            raise SafetensorsError(f"{index_path}: index and shards disagree:\n  " + "\n  ".join(problems))

    def keys(self) -> list[str]:
        return list(self.weight_map)

    @property
    def specs(self) -> dict[str, TensorSpec]:
        return {k: self.files[f].specs[k] for k, f in self.weight_map.items()}

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: s.shape for k, s in self.specs.items()}

    def dtypes(self) -> dict[str, np.dtype]:
        return {k: s.dtype for k, s in self.specs.items()}

    def get_tensor(self, name: str) -> np.ndarray:
        if name not in self.weight_map:
            raise KeyError(f"{self.path}: no tensor {name!r}")
        return self.files[self.weight_map[name]].get_tensor(name)

    def close(self) -> None:
        for f in self.files.values():
            f.close()

    def __enter__(self) -> CheckpointReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------------- writing
def _header_bytes(specs: Sequence[TensorSpec], metadata: Mapping[str, str] | None) -> bytes:
    header: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for s in specs:
        end = offset + s.nbytes
        header[s.name] = {"dtype": dtype_code(s.dtype), "shape": list(s.shape), "data_offsets": [offset, end]}
        offset = end
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def write_file(
    path: str | Path,
    specs: Sequence[TensorSpec],
    arrays: Iterable[tuple[str, np.ndarray]],
    *,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write one safetensors file; `arrays` yields (name, array) in the order of `specs`, one at a time."""
    path = Path(path)
    it: Iterator[tuple[str, np.ndarray]] = iter(arrays)
    with open(path, "wb") as f:
        f.write(_header_bytes(specs, {"format": "pt", **(metadata or {})}))
        for spec in specs:
            try:
                name, arr = next(it)
            except StopIteration:
                raise SafetensorsError(f"{path}: ran out of arrays; expected {spec.name!r} next") from None
            arr = np.asarray(arr)
            if name != spec.name or tuple(arr.shape) != spec.shape or arr.dtype != spec.dtype:
                raise SafetensorsError(
                    f"{path}: expected {spec.name!r} {spec.dtype}{list(spec.shape)} next, "
                    f"got {name!r} {arr.dtype}{list(arr.shape)}"
                )
            if arr.size:
                f.write(np.ascontiguousarray(arr).reshape(-1).view(np.uint8).data)


def plan_shards(specs: Sequence[TensorSpec], max_shard_bytes: int) -> list[list[TensorSpec]]:
    """Split tensors, in order, into shards of at most `max_shard_bytes` (a bigger tensor gets its own)."""
    shards: list[list[TensorSpec]] = [[]]
    size = 0
    for s in specs:
        if shards[-1] and size + s.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(s)
        size += s.nbytes
    return shards


def write_checkpoint(
    out_dir: str | Path,
    specs: Sequence[TensorSpec],
    arrays: Iterable[tuple[str, np.ndarray]],
    *,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    metadata: Mapping[str, str] | None = None,
    on_tensor: Callable[[str], None] | None = None,
) -> list[str]:
    """Write tensors as HF does: `model.safetensors` if they fit one shard, else
    `model-0000i-of-0000N.safetensors` plus `model.safetensors.index.json` (tensor by tensor, `specs` order).

    Returns the file names written. `on_tensor(name)` runs after each tensor (for progress bars)."""
    out_dir = Path(out_dir)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        dups = sorted({n for n in names if names.count(n) > 1})
        raise SafetensorsError(f"{out_dir}: duplicate tensor names {dups}")
    shards = plan_shards(specs, max_shard_bytes)
    it = iter(arrays)

    def counted(n: int) -> Iterator[tuple[str, np.ndarray]]:
        for _ in range(n):
            item = next(it)
            yield item
            if on_tensor is not None:
                on_tensor(item[0])

    if len(shards) == 1:
        write_file(out_dir / SINGLE_FILE, shards[0], counted(len(shards[0])), metadata=metadata)
        return [SINGLE_FILE]
    files, weight_map = [], {}
    for i, shard in enumerate(shards, 1):
        fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        write_file(out_dir / fname, shard, counted(len(shard)), metadata=metadata)
        files.append(fname)
        weight_map.update({s.name: fname for s in shard})
    index = {
        "metadata": {"total_size": sum(s.nbytes for s in specs)},
        "weight_map": dict(sorted(weight_map.items())),
    }
    (out_dir / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    return [*files, INDEX_FILE]


def parse_size(text: str | int) -> int:
    """'4GB' -> 4_000_000_000, '500MiB' -> 524_288_000, '1234' -> 1234 (bytes)."""
    if isinstance(text, int):
        return text
    units = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
             "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
    s = text.strip().upper().replace(" ", "")
    num = s.rstrip("KMGTIB")
    unit = s[len(num):]
    try:
        value = float(num)
    except ValueError:
        value = -1.0
    if unit not in units or value <= 0:
        raise ValueError(f"size {text!r}: expected a positive number with an optional unit: 4GB, 500MB, 2GiB")
    return int(value * units[unit])
