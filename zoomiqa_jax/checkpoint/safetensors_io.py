"""Read and write safetensors checkpoints in NumPy, one tensor at a time, without torch.

The format: an 8-byte little-endian header length N, N bytes of JSON
`{"name": {"dtype": "BF16", "shape": [...], "data_offsets": [begin, end]}, ..., "__metadata__": {...}}`
(padded with spaces to a multiple of 8), then the raw little-endian bytes of every tensor, back to back, with
offsets counted from the end of the header.

Reading goes through the `safetensors` package: `safe_open(framework="numpy", backend="pread")` checks the header
(JSON, dtypes, shapes, overflow, offsets covering the data exactly) and `get_tensor` preads one tensor into a
fresh array, so a reader costs about one tensor on top of what the caller keeps (its default "mmap" backend keeps
every page read resident until the file closes: the whole file in the peak RSS docs/conversion.md bounds). BF16
arrives as `ml_dtypes.bfloat16`, a dtype name numpy knows once ml_dtypes is imported.

Still written here, and why:
- the writer: safetensors' writers (`safetensors.numpy.save_file`, `serialize_file`) take every tensor of a file
  at once, so a whole shard (4 GB by default; the model, when smaller) would sit in memory. Here the header is
  built from the tensor list (name, shape, dtype) first, then the arrays are written one at a time.
- F8_E4M3 / F8_E5M2 reads: safetensors' numpy API (0.8) looks these dtypes up on the numpy module, which lacks
  them; they are read at the header's offsets with the ml_dtypes dtype.
- naming what is wrong in a bad file: safetensors' errors do not say which tensor; `_explain` reads the header.

A checkpoint directory holds either `model.safetensors` or shards `model-00001-of-0000N.safetensors` listed in
`model.safetensors.index.json` (`{"metadata": {"total_size": bytes}, "weight_map": {name: shard file}}`),
as written by transformers' `save_pretrained`.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import ml_dtypes
import numpy as np
from safetensors import SafetensorError, safe_open

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
_NOT_IN_NUMPY_API = {np.dtype(ml_dtypes.float8_e4m3fn), np.dtype(ml_dtypes.float8_e5m2)}


def _explain(path: Path) -> str | None:
    """Where `path` is wrong, when safetensors refused it: a header length past the file, or the tensor whose
    offsets do not fit its shape and dtype or the data (None: safetensors' own message says it all)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            return None
        (n,) = struct.unpack("<Q", raw)
        if n > min(size - 8, _MAX_HEADER):
            return f"header length {n} does not fit the file size {size}"
        try:
            header = dict(json.loads(f.read(n)))
        except (ValueError, TypeError):
            return None
    header.pop("__metadata__", None)
    for name, info in header.items():
        try:
            shape, (begin, end) = info["shape"], (int(x) for x in info["data_offsets"])
            if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
                return None
            nbytes = math.prod(shape) * numpy_dtype(info["dtype"]).itemsize
        except (KeyError, TypeError, ValueError):
            return None
        if end - begin != nbytes or begin < 0 or end > size - 8 - n:
            return (f"tensor {name!r} has offsets [{begin}, {end}] for {nbytes} bytes of {info['dtype']}{shape}; "
                    f"data section is {size - 8 - n} bytes")
    return None


class SafetensorsFile:
    """One `.safetensors` file, opened with `safetensors.safe_open`; `get_tensor` returns an owned copy."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise SafetensorsError(f"{self.path}: no such file")
        try:
            self._file = safe_open(self.path, framework="numpy", backend="pread")
        except SafetensorError as e:
            why = _explain(self.path)
            raise SafetensorsError(f"{self.path}: {why} (safetensors: {e})" if why else f"{self.path}: {e}") from None
        try:
            self.metadata: dict[str, str] = self._file.metadata() or {}
            self.specs: dict[str, TensorSpec] = {}
            for name in self._file.offset_keys():  # file order
                view = self._file.get_slice(name)
                try:
                    dtype = numpy_dtype(view.get_dtype())
                except SafetensorsError as e:
                    raise SafetensorsError(f"{self.path}: tensor {name!r}: {e}") from None
                self.specs[name] = TensorSpec(name, tuple(view.get_shape()), dtype)
        except BaseException:
            self.close()
            raise
        self._starts: dict[str, int] | None = None  # file offset of each tensor, for F8 reads

    def keys(self) -> list[str]:
        return list(self.specs)

    def get_tensor(self, name: str) -> np.ndarray:
        """A writable NumPy array of tensor `name`, read from the file (nothing of the file stays mapped)."""
        if name not in self.specs:
            raise KeyError(f"{self.path}: no tensor {name!r}")
        spec = self.specs[name]
        if spec.dtype in _NOT_IN_NUMPY_API:
            return self._read_raw(spec)
        try:
            return self._file.get_tensor(name)
        except SafetensorError as e:
            raise SafetensorsError(f"{self.path}: tensor {name!r}: {e}") from None

    def _read_raw(self, spec: TensorSpec) -> np.ndarray:
        """Read `spec` at its header offset (safe_open has checked the header)."""
        if self._starts is None:
            with open(self.path, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(n))
            self._starts = {k: 8 + n + v["data_offsets"][0] for k, v in header.items() if k != "__metadata__"}
        count = math.prod(spec.shape)
        return np.fromfile(self.path, spec.dtype, count, offset=self._starts[spec.name]).reshape(spec.shape)

    def close(self) -> None:
        self._file.__exit__(None, None, None)  # safe_open's close; a closed file refuses further reads

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
