"""Builders on fake manual directories that mimic each benchmark's published label file (columns, score ranges),
with tiny PNG / JPEG / BMP images and bad records (non-numeric, out of range, missing file, undecodable bytes)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from zoomiqa_jax.data.builders import (
    DATASETS,
    BadRecordError,
    ManualDirError,
    build_dataset,
    load_split,
    read_build_log,
)


@dataclasses.dataclass
class Fake:
    """What a fake manual folder holds: good keys -> (file, raw score, split), bad keys -> failing field."""

    good: dict[str, tuple[Path, float, str]] = dataclasses.field(default_factory=dict)
    bad: dict[str, str] = dataclasses.field(default_factory=dict)


_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".bmp": "BMP"}


def _image(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).save(path, _FORMATS[path.suffix])
    return path


def _garbage(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")


def fake_koniq(root: Path) -> Fake:
    fake, rows = Fake(), []
    for i, (mos, split, set_) in enumerate(
        [
            (1.0, "train", "training"),
            (55.5, "train", "training"),
            (100.0, "test", "test"),
            (73.25, "test", "test"),
            (40.0, "validation", "validation"),
        ]
    ):
        name = f"{1000 + i}.jpg"
        fake.good[name] = (_image(root / "1024x768" / name, i), mos, split)
        rows.append(f"{name},0,1,2,3,4,10,{mos},0.5,{set_}")
    _image(root / "1024x768" / "2000.jpg", 9)
    rows.append("2000.jpg,0,1,2,3,4,10,150,0.5,test")  # above the published [1, 100]
    _image(root / "1024x768" / "2001.jpg", 10)
    rows.append("2001.jpg,0,1,2,3,4,10,n/a,0.5,training")  # not a number
    rows.append("2002.jpg,0,1,2,3,4,10,50,0.5,test")  # no such file
    _garbage(root / "1024x768" / "2003.jpg")
    rows.append("2003.jpg,0,1,2,3,4,10,50,0.5,test")  # undecodable
    _image(root / "1024x768" / "2004.jpg", 11)
    rows.append("2004.jpg,0,1,2,3,4,10,50,0.5,holdout")  # not a KonIQ set
    fake.bad = {"2000.jpg": "MOS", "2001.jpg": "MOS", "2002.jpg": "image", "2003.jpg": "image", "2004.jpg": "set"}
    header = "image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,set"
    (root / "koniq10k_distributions_sets.csv").write_text("\n".join([header, *rows]) + "\n")
    return fake


def fake_spaq(root: Path) -> Fake:
    fake, rows = Fake(), []
    for i, mos in enumerate([0.0, 42.5, 100.0]):
        name = f"{i + 1:05d}.jpg"
        fake.good[name] = (_image(root / "TestImage" / name, 20 + i), mos, "test")
        rows.append(f"{name},{mos},50,50,50,50,50")
    _image(root / "TestImage" / "00009.jpg", 29)
    rows += ["00009.jpg,100.5,1,1,1,1,1", "00010.jpg,30,1,1,1,1,1"]
    fake.bad = {"00009.jpg": "MOS", "00010.jpg": "image"}
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    header = "Image name,MOS,Brightness,Colorfulness,Contrast,Noisiness,Sharpness"
    (root / "Annotations" / "MOS and Image attribute scores.csv").write_text("\n".join([header, *rows]) + "\n")
    return fake


def fake_kadid(root: Path) -> Fake:
    fake, rows = Fake(), []
    for i, mos in enumerate([1.0, 3.37, 5.0]):
        name = f"I01_0{i + 1}_01.png"
        fake.good[name] = (_image(root / "images" / name, 30 + i), mos, "test")
        rows.append(f"{name},I01.png,{mos},0.1")
    _image(root / "images" / "I01_04_01.png", 39)
    rows.append("I01_04_01.png,I01.png,0.5,0.1")  # below the published [1, 5]
    fake.bad = {"I01_04_01.png": "dmos"}
    (root / "dmos.csv").write_text("\n".join(["dist_img,ref_img,dmos,var", *rows]) + "\n")
    return fake


def fake_pipal(root: Path) -> Fake:
    fake = Fake()
    lines = {"A0001.txt": [], "A0002.txt": []}
    for i, elo in enumerate([1100.0, 1450.5, 1725.25]):
        name = f"A000{1 + i // 2}_00_0{i}.bmp"
        fake.good[name] = (_image(root / f"Distortion_{1 + i % 2}" / name, 40 + i), elo, "test")
        lines[f"A000{1 + i // 2}.txt"].append(f"{name},{elo}")
    lines["A0002.txt"].append("A0002_00_09.bmp,1000.0")  # missing image; its Elo still sets the observed min
    fake.bad = {"A0002_00_09.bmp": "image"}
    (root / "Train_Label").mkdir(parents=True, exist_ok=True)
    for file, content in lines.items():
        (root / "Train_Label" / file).write_text("\n".join(content) + "\n")
    return fake


def fake_livew(root: Path) -> Fake:
    fake, names, scores = Fake(), [], []
    _image(root / "Images" / "trainingImages" / "t1.bmp", 50)  # practice image: not under Images/ itself
    names.append("t1.bmp")
    scores.append(60.0)
    for i, mos in enumerate([3.1, 50.0, 97.2]):
        name = f"{100 + i}.bmp"
        fake.good[name] = (_image(root / "Images" / name, 51 + i), mos, "test")
        names.append(name)
        scores.append(mos)
    _image(root / "Images" / "200.bmp", 59)
    names.append("200.bmp")
    scores.append(float("nan"))
    fake.bad = {"t1.bmp": "image", "200.bmp": "AllMOS_release"}
    (root / "Data").mkdir(parents=True, exist_ok=True)
    savemat(root / "Data" / "AllImages_release.mat", {"AllImages_release": np.array([[n] for n in names], object)})
    savemat(root / "Data" / "AllMOS_release.mat", {"AllMOS_release": np.array([scores])})
    savemat(root / "Data" / "AllStdDev_release.mat", {"AllStdDev_release": np.ones((1, len(names)))})
    return fake


def fake_agiqa3k(root: Path) -> Fake:
    fake, rows = Fake(), []
    for i, (ext, mos) in enumerate([(".jpg", 0.2), (".png", 2.5), (".jpg", 4.0)]):
        name = f"sd1.5_normal_00{i}{ext}"
        fake.good[name] = (_image(root / name, 60 + i), mos, "test")
        rows.append(f'{name},"a cat, on a mat",adj,adj,baroque,{mos},0.5,3.0,0.4')
    _image(root / "sd1.5_normal_009.jpg", 69)
    rows.append('sd1.5_normal_009.jpg,"a dog",adj,adj,none,,0.5,3.0,0.4')  # empty score
    fake.bad = {"sd1.5_normal_009.jpg": "mos_quality"}
    header = "name,prompt,adj1,adj2,style,mos_quality,std_quality,mos_align,std_align"
    (root / "data.csv").write_text("\n".join([header, *rows]) + "\n")
    return fake


def fake_csiq(root: Path) -> Fake:
    fake, lines = Fake(), []
    for i, (kind, dmos) in enumerate([("awgn", 0.0), ("jpeg", 0.37), ("blur", 1.0)]):
        name = f"1600.{kind.upper()}.{i + 1}.png"
        fake.good[name] = (_image(root / "dst_imgs" / kind / name, 70 + i), dmos, "test")
        lines.append(f"{name} {dmos}")
    _image(root / "src_imgs" / "1600.png", 78)
    _image(root / "dst_imgs" / "awgn" / "1600.AWGN.5.png", 79)
    lines.append("1600.AWGN.5.png 1.2")  # above the published [0, 1]
    fake.bad = {"1600.AWGN.5.png": "dmos"}
    (root / "csiq_label.txt").write_text("\n".join(lines) + "\n")
    return fake


FAKES = {
    "koniq": fake_koniq,
    "spaq": fake_spaq,
    "kadid": fake_kadid,
    "pipal": fake_pipal,
    "livew": fake_livew,
    "agiqa3k": fake_agiqa3k,
    "csiq": fake_csiq,
}
FOLDER = {"kadid": "kadid10k"}  # docs/datasets.md shows kadid10k/; the other folders are the keys


def expected_norm(name: str, raw: float) -> float:
    """docs/datasets.md table, written out per dataset (PIPAL: the fake label file's min 1000, max 1725.25)."""
    return {
        "koniq": lambda x: 1 + 4 * (x - 1) / 99,
        "spaq": lambda x: 1 + 4 * x / 100,
        "kadid": lambda x: x,
        "pipal": lambda x: 1 + 4 * (x - 1000.0) / (1725.25 - 1000.0),
        "livew": lambda x: 1 + 4 * x / 100,
        "agiqa3k": lambda x: 1 + 4 * x / 5,
        "csiq": lambda x: 5 - 4 * x,
    }[name](raw)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Fake]]:
    manual = tmp_path_factory.mktemp("manual")
    data = tmp_path_factory.mktemp("tfds")
    fakes = {name: make(manual / FOLDER.get(name, name)) for name, make in FAKES.items()}
    for name in DATASETS:
        build_dataset(name, manual, data)
    return manual, data, fakes


def test_every_dataset_has_a_fake() -> None:
    assert set(FAKES) == set(DATASETS)


@pytest.mark.parametrize("name", sorted(FAKES))
def test_split_counts_and_keys_match_good_rows(built, name: str) -> None:
    _, data, fakes = built
    fake = fakes[name]
    splits = sorted({split for _, _, split in fake.good.values()})
    assert splits == (["test", "train", "validation"] if name == "koniq" else ["test"])
    for split in splits:
        source = load_split(data, name, split)
        want = {k for k, (_, _, s) in fake.good.items() if s == split}
        assert len(source) == len(want)
        assert {source[i]["key"] for i in range(len(source))} == want


@pytest.mark.parametrize("name", sorted(FAKES))
def test_examples_hold_original_bytes_raw_and_normalized_scores(built, name: str) -> None:
    manual, data, fakes = built
    for split in sorted({s for _, _, s in fakes[name].good.values()}):
        for item in load_split(data, name, split):
            path, raw, _ = fakes[name].good[item["key"]]
            assert item["image"] == path.read_bytes()
            assert item["image_format"] == _FORMATS[path.suffix].lower()
            assert (item["width"], item["height"]) == (8, 6)
            assert item["file_name"] == path.relative_to(manual / FOLDER.get(name, name)).as_posix()
            # stored as float32 (tfds's example format); the text keeps the label file's digits exactly
            assert float(item["mos_text"]) == raw
            assert item["mos"] == pytest.approx(raw, rel=1e-7, abs=1e-7)
            assert item["mos_norm"] == pytest.approx(expected_norm(name, raw), rel=1e-7)
            assert 1.0 - 1e-6 <= item["mos_norm"] <= 5.0 + 1e-6


@pytest.mark.parametrize("name", sorted(FAKES))
def test_build_log_lists_bad_records_with_key_source_and_field(built, name: str) -> None:
    _, data, fakes = built
    log = read_build_log(data, name)
    fake = fakes[name]
    assert log["n_bad"] == len(fake.bad) == len(log["bad"])
    assert {b["key"]: b["field"] for b in log["bad"]} == fake.bad
    assert all(b["source"] and b["reason"] for b in log["bad"])
    assert sum(log["counts"].values()) == len(fake.good)
    assert log["n_label_rows"] == len(fake.good) + len(fake.bad)
    assert json.loads((data / name / "1.0.0" / "build_log.json").read_text()) == log
    assert (data / name / "1.0.0" / "dataset_info.json").is_file()
    assert list((data / name / "1.0.0").glob(f"{name}-*.array_record-*"))


def test_pipal_range_is_observed_and_csiq_is_inverted(built) -> None:
    _, data, _ = built
    assert read_build_log(data, "pipal")["normalization"]["range"] == [1000.0, 1725.25]
    assert read_build_log(data, "pipal")["normalization"]["range_kind"] == "observed"
    csiq = {item["key"]: item["mos_norm"] for item in load_split(data, "csiq", "test")}
    assert csiq["1600.AWGN.1.png"] == 5.0 and csiq["1600.BLUR.3.png"] == 1.0
    assert csiq["1600.JPEG.2.png"] == pytest.approx(5 - 4 * 0.37, rel=1e-7)


def test_bad_record_reasons_name_the_problem(built) -> None:
    _, data, _ = built
    reasons = {b["key"]: b["reason"] for b in read_build_log(data, "koniq")["bad"]}
    assert "outside" in reasons["2000.jpg"] and "not a number" in reasons["2001.jpg"]
    assert "not found" in reasons["2002.jpg"] and "undecodable" in reasons["2003.jpg"]
    sources = {b["key"]: b["source"] for b in read_build_log(data, "koniq")["bad"]}
    assert sources["2000.jpg"].endswith("koniq10k_distributions_sets.csv:7")


def test_strict_raises_at_first_bad_record_and_writes_nothing(built, tmp_path: Path) -> None:
    manual, _, _ = built
    with pytest.raises(BadRecordError, match=r"koniq10k_distributions_sets\.csv:7.*'2000\.jpg'.*'MOS'"):
        build_dataset("koniq", manual, tmp_path, strict=True)
    assert not (tmp_path / "koniq").exists()


def test_strict_build_succeeds_without_bad_records(tmp_path: Path) -> None:
    root = tmp_path / "manual" / "kadid"
    _image(root / "images" / "I01_01_01.png", 1)
    (root / "dmos.csv").write_text("dist_img,ref_img,dmos,var\nI01_01_01.png,I01.png,4.5,0.1\n")
    report = build_dataset("kadid", tmp_path / "manual", tmp_path / "data", strict=True)
    assert report.counts == {"test": 1} and report.n_bad == 0
    with pytest.raises(FileExistsError, match="overwrite=True"):
        build_dataset("kadid", tmp_path / "manual", tmp_path / "data")
    (root / "dmos.csv").write_text("dist_img,ref_img,dmos,var\nI01_01_01.png,I01.png,2.0,0.1\n")
    build_dataset("kadid", tmp_path / "manual", tmp_path / "data", overwrite=True)
    assert load_split(tmp_path / "data", "kadid", "test")[0]["mos"] == 2.0


def test_missing_label_file_or_column_names_it(tmp_path: Path) -> None:
    (tmp_path / "agiqa3k").mkdir()
    with pytest.raises(ManualDirError, match=r"data\.csv"):
        build_dataset("agiqa3k", tmp_path, tmp_path / "data")
    (tmp_path / "agiqa3k" / "data.csv").write_text("name,prompt,mos_align\nx.jpg,p,3\n")
    with pytest.raises(ManualDirError, match=r"data\.csv.*mos_quality"):
        build_dataset("agiqa3k", tmp_path, tmp_path / "data")
    with pytest.raises(ManualDirError, match="csiq"):
        build_dataset("csiq", tmp_path, tmp_path / "data")


def test_load_split_errors_name_dataset_and_split(built, tmp_path: Path) -> None:
    _, data, _ = built
    with pytest.raises(KeyError, match="'train'"):
        load_split(data, "spaq", "train")
    with pytest.raises(FileNotFoundError, match="koniq"):
        load_split(tmp_path, "koniq", "test")


def test_grain_reads_the_source_and_tensorflow_is_never_imported(built) -> None:
    import grain

    _, data, fakes = built
    source = load_split(data, "koniq", "train")
    items = list(grain.MapDataset.source(source).shuffle(seed=0))
    assert sorted(i["key"] for i in items) == sorted(k for k, v in fakes["koniq"].good.items() if v[2] == "train")
    assert "tensorflow" not in sys.modules


def test_spaq_xlsx_reads_like_its_csv_export(tmp_path: Path) -> None:
    """SPAQ publishes its labels as .xlsx (openpyxl is a dependency): the sheet gives the same dataset as the CSV."""
    import csv

    import openpyxl

    fake_spaq(tmp_path / "csv" / "spaq")
    ann = tmp_path / "csv" / "spaq" / "Annotations"
    csv_file = ann / "MOS and Image attribute scores.csv"
    xdir = tmp_path / "xlsx" / "spaq"
    shutil.copytree(tmp_path / "csv" / "spaq", xdir)
    (xdir / "Annotations" / csv_file.name).unlink()
    book = openpyxl.Workbook()
    for row in csv.reader(csv_file.open()):
        book.active.append([float(c) if c.replace(".", "", 1).isdigit() else c for c in row])
    book.save(xdir / "Annotations" / "MOS and Image attribute scores.xlsx")
    a = build_dataset("spaq", tmp_path / "csv", tmp_path / "data_csv")
    b = build_dataset("spaq", tmp_path / "xlsx", tmp_path / "data_xlsx")
    assert a.counts == b.counts and len(a.bad) == len(b.bad) == 2
    key = lambda item: item["key"]
    ra = sorted(load_split(tmp_path / "data_csv", "spaq", "test"), key=key)
    rb = sorted(load_split(tmp_path / "data_xlsx", "spaq", "test"), key=key)
    assert [(x["key"], x["mos_norm"], x["image"]) for x in ra] == [(x["key"], x["mos_norm"], x["image"]) for x in rb]


def test_source_pickles_and_tfds_data_source_reads_the_same_build(built) -> None:
    import pickle

    import tensorflow_datasets as tfds

    _, data, _ = built
    source = load_split(data, "csiq", "test")
    clone = pickle.loads(pickle.dumps(source))  # grain worker processes receive the source pickled
    assert [clone[i] for i in range(len(clone))] == list(source)
    plain = tfds.data_source("csiq", split="test", data_dir=str(data))  # found from the files, no registration
    assert sorted(plain[i]["key"].decode() for i in range(len(plain))) == sorted(item["key"] for item in source)
