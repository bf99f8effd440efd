"""Readers of the seven benchmarks' published label files, laid out as docs/datasets.md documents.

Each reader takes the dataset's folder inside the manual directory (``<manual_dir>/<key>/``) and returns one
`RawLabel` per label row, *unchecked*: the score is still the text or number found in the file and the image
path may not exist. `builders.tfds_builder.plan_examples` checks them (number, range, file, decodable bytes)
and turns the failures into bad records. A missing label file or a missing column is not a bad record but an
error (`ManualDirError`) naming the file and what was expected, since nothing could be built from it.

Split rule (the papers' use): KonIQ-10k rows go to the split named by its ``set`` column (``training`` ->
``train``, ``validation`` -> ``validation``, ``test`` -> ``test``; the papers train on ``train`` and report on
``test``); every other dataset is one ``test`` split (cross-dataset evaluation).
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


class ManualDirError(FileNotFoundError):
    """The manual directory lacks a label file or a label file lacks a column; the message names both."""


@dataclasses.dataclass(frozen=True)
class RawLabel:
    """One label row as found: `key` is the image name as the label file writes it (unique per dataset),
    `image` the path it resolves to (None when no file matches), `score` the unparsed value of `field`,
    `source` "file:line" (or "file[index]" for .mat / .xlsx), `split` the split it belongs to."""

    key: str
    image: Path | None
    score: Any
    field: str
    source: str
    split: str = "test"


KONIQ_SETS = {"training": "train", "validation": "validation", "test": "test"}


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise ManualDirError(f"{what}: expected label file {path} (see docs/datasets.md for the layout)")
    return path


def _csv_rows(path: Path, columns: tuple[str, ...], delimiter: str = ",") -> list[tuple[str, dict[str, str]]]:
    """(source "file:line", row) for each non-empty row of a CSV with a header holding `columns`."""
    out = []
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        found = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in columns if c not in found]
        if missing:
            raise ManualDirError(f"{path}: missing column(s) {missing}; header has {found}")
        reader.fieldnames = found
        for row in reader:
            if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
                continue
            out.append((f"{path}:{reader.line_num}", row))
    return out


def _maybe(path: Path) -> Path | None:
    return path if path.is_file() else None


def read_koniq(root: Path) -> list[RawLabel]:
    """koniq10k_distributions_sets.csv: image_name, ..., MOS, SD, set; images in 1024x768/."""
    path = _require_file(root / "koniq10k_distributions_sets.csv", "KonIQ-10k")
    labels = []
    for source, row in _csv_rows(path, ("image_name", "MOS", "set")):
        name = row["image_name"].strip()
        split = KONIQ_SETS.get(row["set"].strip().lower(), f"unknown set {row['set']!r}")
        labels.append(RawLabel(name, _maybe(root / "1024x768" / name), row["MOS"], "MOS", source, split))
    return labels


def _xlsx_rows(path: Path) -> tuple[list[str], list[list[Any]]]:
    try:
        import openpyxl
    except ImportError as err:
        raise ManualDirError(
            f"{path}: reading .xlsx needs openpyxl (pip install openpyxl), or save the sheet as a .csv with "
            "the same columns next to it"
        ) from err
    sheet = openpyxl.load_workbook(path, read_only=True, data_only=True).active
    rows = [list(r) for r in sheet.iter_rows(values_only=True)]
    if not rows:
        raise ManualDirError(f"{path}: the first sheet is empty")
    return [str(c).strip() if c is not None else "" for c in rows[0]], rows[1:]


def read_spaq(root: Path) -> list[RawLabel]:
    """Annotations/MOS and Image attribute scores.(xlsx|csv): first column the image name, then MOS, ...;
    images in TestImage/."""
    stem = root / "Annotations" / "MOS and Image attribute scores"
    csv_path, xlsx_path = stem.with_suffix(".csv"), stem.with_suffix(".xlsx")
    if csv_path.is_file():
        with csv_path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [c.strip() for c in next(reader, [])]
            rows = [(f"{csv_path}:{reader.line_num}", r) for r in reader if any(c.strip() for c in r)]
        path = csv_path
    else:
        header, body = _xlsx_rows(_require_file(xlsx_path, "SPAQ"))
        rows = [(f"{xlsx_path}[row {i + 2}]", r) for i, r in enumerate(body) if any(c is not None for c in r)]
        path = xlsx_path
    if "MOS" not in header:
        raise ManualDirError(f"{path}: missing column 'MOS'; header has {header}")
    mos_col = header.index("MOS")
    labels = []
    for source, row in rows:
        name = str(row[0]).strip() if row and row[0] is not None else ""
        score = row[mos_col] if mos_col < len(row) else None
        labels.append(RawLabel(name, _maybe(root / "TestImage" / name) if name else None, score, "MOS", source))
    return labels


def read_kadid(root: Path) -> list[RawLabel]:
    """dmos.csv: dist_img, ref_img, dmos, var; images in images/."""
    path = _require_file(root / "dmos.csv", "KADID-10k")
    return [
        RawLabel(row["dist_img"].strip(), _maybe(root / "images" / row["dist_img"].strip()), row["dmos"], "dmos", src)
        for src, row in _csv_rows(path, ("dist_img", "dmos"))
    ]


def _index_by_name(folders: list[Path], pattern: str) -> dict[str, Path]:
    """File name -> path over the files matching `pattern` under `folders` (first found wins)."""
    index: dict[str, Path] = {}
    for folder in folders:
        for p in sorted(folder.glob(pattern)):
            if p.is_file():
                index.setdefault(p.name, p)
    return index


def _text_pairs(path: Path, sep: str | None) -> list[tuple[str, str, Any]]:
    """(source, name, score text) per non-empty line "name<sep>score"; a line without two fields gives None."""
    out = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        parts = [p.strip() for p in (line.split(sep) if sep else line.split())]
        out.append((f"{path}:{lineno}", parts[0], parts[1] if len(parts) > 1 else None))
    return out


def read_pipal(root: Path) -> list[RawLabel]:
    """Train_Label/*.txt, lines "A0001_00_00.bmp,<elo>"; images in Distortion_*/."""
    label_files = sorted((root / "Train_Label").glob("*.txt"))
    if not label_files:
        raise ManualDirError(f"PIPAL: expected label files {root / 'Train_Label'}/*.txt (see docs/datasets.md)")
    index = _index_by_name(sorted(root.glob("Distortion_*")), "*")
    return [
        RawLabel(name, index.get(name), score, "elo", source)
        for path in label_files
        for source, name, score in _text_pairs(path, ",")
    ]


def _mat_strings(value: np.ndarray) -> list[str]:
    """A MATLAB cell array of strings (any orientation) as a flat list of str."""
    out = []
    for cell in np.asarray(value, dtype=object).ravel():
        arr = np.asarray(cell).ravel()
        out.append(str(arr[0]).strip() if arr.size else "")
    return out


def read_livew(root: Path) -> list[RawLabel]:
    """Data/AllImages_release.mat + Data/AllMOS_release.mat (same order); images in Images/ only."""
    from scipy.io import loadmat

    names_path = _require_file(root / "Data" / "AllImages_release.mat", "LIVE-Wild")
    mos_path = _require_file(root / "Data" / "AllMOS_release.mat", "LIVE-Wild")
    names_mat, mos_mat = loadmat(names_path), loadmat(mos_path)
    for path, mat, var in ((names_path, names_mat, "AllImages_release"), (mos_path, mos_mat, "AllMOS_release")):
        if var not in mat:
            found = sorted(k for k in mat if not k.startswith("__"))
            raise ManualDirError(f"{path}: missing variable {var!r}; found {found}")
    names = _mat_strings(names_mat["AllImages_release"])
    scores = np.asarray(mos_mat["AllMOS_release"], dtype=np.float64).ravel()
    if len(names) != len(scores):
        raise ManualDirError(f"{names_path} lists {len(names)} images but {mos_path} holds {len(scores)} scores")
    return [
        RawLabel(name, _maybe(root / "Images" / name), float(score), "AllMOS_release", f"{mos_path}[{i}]")
        for i, (name, score) in enumerate(zip(names, scores))
    ]


def read_agiqa3k(root: Path) -> list[RawLabel]:
    """data.csv: name, prompt, ..., mos_quality, std_quality, mos_align, std_align; images beside it."""
    path = _require_file(root / "data.csv", "AGIQA-3K")
    return [
        RawLabel(row["name"].strip(), _maybe(root / row["name"].strip()), row["mos_quality"], "mos_quality", src)
        for src, row in _csv_rows(path, ("name", "mos_quality"))
    ]


def read_csiq(root: Path) -> list[RawLabel]:
    """csiq_label.txt, lines "<distorted name> <dmos>"; images found by name under dst_imgs/ (or src_imgs/)."""
    path = _require_file(root / "csiq_label.txt", "CSIQ")
    index = _index_by_name([root / "dst_imgs", root / "src_imgs"], "**/*")
    return [
        RawLabel(name, _maybe(root / name) if "/" in name else index.get(name), score, "dmos", source)
        for source, name, score in _text_pairs(path, None)
    ]


READERS: dict[str, Callable[[Path], list[RawLabel]]] = {
    "koniq": read_koniq,
    "spaq": read_spaq,
    "kadid": read_kadid,
    "pipal": read_pipal,
    "livew": read_livew,
    "agiqa3k": read_agiqa3k,
    "csiq": read_csiq,
}

# Folder names accepted under the manual directory, first match wins (docs/datasets.md shows kadid10k/).
FOLDERS: dict[str, tuple[str, ...]] = {
    "koniq": ("koniq", "koniq10k"),
    "spaq": ("spaq",),
    "kadid": ("kadid", "kadid10k"),
    "pipal": ("pipal",),
    "livew": ("livew", "live_wild", "ChallengeDB_release"),
    "agiqa3k": ("agiqa3k", "AGIQA-3K"),
    "csiq": ("csiq", "CSIQ"),
}


def dataset_root(manual_dir: str | Path, key: str) -> Path:
    """The dataset's folder inside `manual_dir` (its key, or a known alias such as kadid10k/)."""
    for folder in FOLDERS[key]:
        if (Path(manual_dir) / folder).is_dir():
            return Path(manual_dir) / folder
    raise ManualDirError(f"{key}: no folder {' or '.join(FOLDERS[key])} under manual directory {manual_dir}")
