"""tensorflow-datasets builders (array_record, no TensorFlow) for the seven IQA benchmarks, and their reader.

How TensorFlow is avoided: `tfds.core.GeneratorBasedBuilder` with ``file_format="array_record"`` serializes
examples with tfds's own protobuf example writer and writes `.array_record` shards through the `array_record`
package; reading goes through `tfds.builder_from_directory(...).as_data_source(split)`, an
`ArrayRecordDataSource` that decodes with NumPy. Neither path imports TensorFlow. Features are plain tensors,
not `tfds.features.Image`, so the stored image is the original file's bytes, never decoded or re-encoded.

A build runs in two steps: `plan_examples` reads the label file (`manual.READERS`), checks every row (score
a finite number inside the published range, image file present, bytes decodable by Pillow) and splits the
rows into good examples and bad records; then the builder writes the good ones. The bad ones (key, source
file:line, field, reason) go to ``build_log.json`` next to the dataset's `dataset_info.json`. With
``strict=True`` the first bad record raises `BadRecordError` before anything is written.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import io
import json
import math
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from zoomiqa_jax.data.builders.manual import READERS, RawLabel, dataset_root
from zoomiqa_jax.data.scales import SCALES, observed_range

VERSION = "1.0.0"
BUILD_LOG = "build_log.json"


class BadRecordError(ValueError):
    """A label row failed a check during a strict build; the message names file:line, key and field."""


@dataclasses.dataclass(frozen=True)
class Example:
    """A checked row: what the builder writes (bytes are read again from `image` when writing)."""

    key: str
    image: Path
    mos: float
    mos_text: str
    mos_norm: float
    split: str
    image_format: str
    width: int
    height: int


@dataclasses.dataclass(frozen=True)
class BadRecord:
    key: str
    source: str
    field: str
    reason: str


@dataclasses.dataclass
class Plan:
    """Checked rows of one dataset, the bad ones, and the range used to normalize."""

    name: str
    root: Path
    examples: list[Example]
    bad: list[BadRecord]
    score_range: tuple[float, float]
    range_kind: str  # "published" or "observed"


def _parse_score(raw: Any, field: str) -> float:
    if isinstance(raw, bool) or raw is None or (isinstance(raw, str) and not raw.strip()):
        raise ValueError(f"field {field!r} is empty or not a number: {raw!r}")
    try:
        score = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"field {field!r} is not a number: {raw!r}") from None
    if not math.isfinite(score):
        raise ValueError(f"field {field!r} is not finite: {raw!r}")
    return score


def _probe_image(path: Path) -> tuple[str, int, int]:
    """(format, width, height) of an image file after a full decode; raises ValueError if undecodable."""
    try:
        with Image.open(io.BytesIO(path.read_bytes())) as im:
            im.load()
            return (im.format or "unknown").lower(), im.width, im.height
    except Exception as err:  # Pillow raises many types for bad bytes
        raise ValueError(f"undecodable image bytes in {path}: {type(err).__name__}: {err}") from None


def plan_examples(name: str, manual_dir: str | Path, *, strict: bool = False, workers: int = 4) -> Plan:
    """Read and check dataset `name`'s label rows under `manual_dir` (see the module docstring)."""
    scale = SCALES[name]
    root = dataset_root(manual_dir, name)
    labels = READERS[name](root)
    bad: list[BadRecord] = []
    bad_labels: list[RawLabel] = []
    row = {id(label): i for i, label in enumerate(labels)}  # to list bad records in label-file order

    def reject(label: RawLabel, field: str, reason: str) -> None:
        record = BadRecord(label.key, label.source, field, reason)
        if strict:
            raise BadRecordError(f"{name}: {record.source}: key {record.key!r}, field {record.field!r}: {reason}")
        bad.append(record)
        bad_labels.append(label)

    scored: list[tuple[RawLabel, float]] = []
    seen: set[str] = set()
    for label in labels:
        try:
            score = _parse_score(label.score, label.field)
        except ValueError as err:
            reject(label, label.field, str(err))
            continue
        if not scale.in_range(score):
            reject(label, label.field, f"field {label.field!r} = {score} is outside [{scale.low}, {scale.high}]")
        elif not label.key:
            reject(label, "image", "empty image name")
        elif label.key in seen:
            reject(label, "image", f"duplicate key {label.key!r}")
        elif label.split not in scale.splits and not (name == "koniq" and label.split == "validation"):
            reject(label, "set", f"{label.split}; expected one of training, validation, test")
        elif label.image is None:
            reject(label, "image", f"image file not found for {label.key!r} under {root}")
        else:
            seen.add(label.key)
            scored.append((label, score))

    if scale.has_published_range:
        score_range, range_kind = (float(scale.low), float(scale.high)), "published"  # type: ignore[arg-type]
    else:  # Elo: the label file's min and max over every finite score (scales.observed_range)
        finite = []
        for label in labels:
            try:
                finite.append(_parse_score(label.score, label.field))
            except ValueError:
                pass
        score_range, range_kind = observed_range(finite), "observed"

    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        probes = list(pool.map(lambda item: _try_probe(item[0].image), scored))
    examples = []
    for (label, score), probe in zip(scored, probes):
        if isinstance(probe, str):
            reject(label, "image", probe)
            continue
        fmt, width, height = probe
        norm = scale.normalize(score, None if scale.has_published_range else score_range)
        text = str(label.score).strip()
        examples.append(Example(label.key, label.image, score, text, norm, label.split, fmt, width, height))  # type: ignore[arg-type]
    bad_rows = sorted(zip(bad, bad_labels), key=lambda pair: row[id(pair[1])])
    return Plan(name, root, examples, [b for b, _ in bad_rows], score_range, range_kind)


def _try_probe(path: Path | None) -> tuple[str, int, int] | str:
    try:
        return _probe_image(path)  # type: ignore[arg-type]
    except ValueError as err:
        return str(err)


class IqaBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """One IQA benchmark as an array_record tfds dataset, written from a checked `Plan`."""

    VERSION = tfds.core.Version(VERSION)
    RELEASE_NOTES = {str(VERSION): "Original image bytes, raw score and score normalized to [1, 5]."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Lay the dataset out under <manual_dir>/<key>/ as docs/datasets.md shows."

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> None:
        """None: nothing is downloaded, so there is no checksums file beside the code to find. (tfds's own lookup
        of the builder's source file needs the `importlib_resources` backport, which tfds does not install.)"""
        return None

    def __init__(self, *, plan: Plan, **kwargs: Any) -> None:
        self.name = plan.name
        self._plan = plan
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        scale = SCALES[self.name]
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"{scale.name}: original image bytes, {scale.kind} as published and normalized to [1, 5]. "
            f"Source: {scale.source}",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(), dtype=np.object_, doc="original file bytes"),
                    "image_format": tfds.features.Text(doc="Pillow's name for the file format: jpeg, png, bmp"),
                    "key": tfds.features.Text(doc="image name as the label file writes it"),
                    "file_name": tfds.features.Text(doc="path relative to the dataset's manual folder"),
                    # tfds serializes floats as float32 (tf.train.Example FloatList): ~7 significant digits.
                    "mos": tfds.features.Scalar(dtype=np.float32, doc=f"raw {scale.kind} as published"),
                    "mos_text": tfds.features.Text(doc="the raw score exactly as the label file writes it"),
                    "mos_norm": tfds.features.Scalar(dtype=np.float32, doc="score mapped to [1, 5], higher=better"),
                    "width": tfds.features.Scalar(dtype=np.int32),
                    "height": tfds.features.Scalar(dtype=np.int32),
                }
            ),
            supervised_keys=None,
            homepage=None,
            citation=None,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        splits = sorted({e.split for e in self._plan.examples})
        return {split: self._generate_examples(split) for split in splits}

    def _generate_examples(self, split: str) -> Any:
        for e in self._plan.examples:
            if e.split != split:
                continue
            yield (
                e.key,
                {
                    "image": e.image.read_bytes(),
                    "image_format": e.image_format,
                    "key": e.key,
                    "file_name": e.image.relative_to(self._plan.root).as_posix(),
                    "mos": e.mos,
                    "mos_text": e.mos_text,
                    "mos_norm": e.mos_norm,
                    "width": e.width,
                    "height": e.height,
                },
            )


@dataclasses.dataclass
class BuildReport:
    """Where a dataset was written and what went into it (the content of build_log.json)."""

    name: str
    path: Path
    counts: dict[str, int]
    bad: list[BadRecord]
    log_path: Path

    @property
    def n_bad(self) -> int:
        return len(self.bad)


def build_dataset(
    name: str, manual_dir: str | Path, data_dir: str | Path, *, strict: bool = False, overwrite: bool = False
) -> BuildReport:
    """Build dataset `name` ("koniq", "spaq", "kadid", "pipal", "livew", "agiqa3k", "csiq") from
    `<manual_dir>/<key>/` into `<data_dir>/<name>/1.0.0/` as array_record, and write build_log.json there.

    Raises `BadRecordError` at the first bad row when `strict`, `ManualDirError` when a label file or column
    is missing, `FileExistsError` when the dataset exists and not `overwrite`, and ValueError when no row is good.
    """
    if name not in READERS:
        raise KeyError(f"unknown dataset {name!r}; expected one of {sorted(READERS)}")
    manual_dir, data_dir = Path(manual_dir).expanduser(), Path(data_dir).expanduser()
    out = data_dir / name / VERSION
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True to rebuild {name}")
    plan = plan_examples(name, manual_dir, strict=strict)
    if not plan.examples:
        raise ValueError(f"{name}: no usable example under {plan.root} ({len(plan.bad)} bad records)")
    if out.exists():
        shutil.rmtree(out)
    builder = IqaBuilder(plan=plan, data_dir=str(data_dir), file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
    counts = dict(sorted(Counter(e.split for e in plan.examples).items()))
    scale = SCALES[name]
    log = {
        "dataset": name,
        "version": VERSION,
        "manual_dir": str(plan.root),
        "counts": counts,
        "n_label_rows": len(plan.examples) + len(plan.bad),
        "n_bad": len(plan.bad),
        "bad_by_field": dict(Counter(b.field for b in plan.bad)),
        "normalization": {
            "kind": scale.kind,
            "range": list(plan.score_range),
            "range_kind": plan.range_kind,
            "higher_is_better": scale.higher_is_better,
            "formula": "1 + 4 (x - lo) / (hi - lo)" if scale.higher_is_better else "1 + 4 (hi - x) / (hi - lo)",
        },
        "bad": [dataclasses.asdict(b) for b in plan.bad],
    }
    log_path = out / BUILD_LOG
    log_path.write_text(json.dumps(log, indent=1) + "\n", encoding="utf-8")
    return BuildReport(name, out, counts, plan.bad, log_path)


class IqaSource:
    """Random-access view of one split (grain's `RandomAccessDataSource` protocol: len and getitem).

    Items are dicts: image (original file bytes), image_format, key, file_name, mos_text (str), mos, mos_norm
    (float, stored as float32), width, height (int). Picklable, so grain worker processes can hold it.
    """

    def __init__(self, source: Any, name: str, split: str) -> None:
        self._source, self.name, self.split = source, name, split

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self._source):
            raise IndexError(f"{self.name}/{self.split}: index {index} outside [0, {len(self._source)})")
        raw = self._source[index]
        item: dict[str, Any] = {"image": bytes(raw["image"])}
        for k in ("image_format", "key", "file_name", "mos_text"):
            v = raw[k]
            item[k] = v.decode("utf-8") if isinstance(v, bytes) else str(v)
        item["mos"], item["mos_norm"] = float(raw["mos"]), float(raw["mos_norm"])
        item["width"], item["height"] = int(raw["width"]), int(raw["height"])
        return item

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        return f"IqaSource({self.name}/{self.split}, {len(self)} examples)"


def load_split(data_dir: str | Path, name: str, split: str) -> IqaSource:
    """The built `split` of dataset `name` under `data_dir` (as written by `build_dataset`), random access."""
    path = Path(data_dir).expanduser() / name / VERSION
    if not (path / "dataset_info.json").is_file():
        raise FileNotFoundError(f"no built dataset {name!r} at {path}; run build_dataset({name!r}, ...) first")
    builder = tfds.builder_from_directory(str(path))
    if split not in builder.info.splits:
        raise KeyError(f"{name} has no split {split!r}; built splits: {sorted(builder.info.splits)}")
    return IqaSource(builder.as_data_source(split=split), name, split)


def read_build_log(data_dir: str | Path, name: str) -> dict[str, Any]:
    """The build log of dataset `name` under `data_dir` as a dict."""
    return json.loads((Path(data_dir).expanduser() / name / VERSION / BUILD_LOG).read_text(encoding="utf-8"))
