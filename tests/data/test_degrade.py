"""The Q-Insight degradation generator: determinism, monotone severity, null identity, bad sources."""

import json

import numpy as np
import pytest
from PIL import Image

from zoomiqa_jax.data import degrade as D
from zoomiqa_jax.data.labels import load_labels


def _scene(seed=0, h=96, w=128):
    """A small natural-ish test image: smooth gradients, edges and fine texture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([0.5 + 0.4 * xx, 0.3 + 0.5 * yy, 0.6 - 0.3 * xx * yy], axis=-1)
    base += 0.15 * ((xx * 12).astype(int) % 2)[..., None]  # hard vertical edges
    base += 0.08 * np.sin(60 * xx + 40 * yy)[..., None]  # fine texture
    base += 0.02 * rng.standard_normal((h, w, 1))
    return Image.fromarray(np.uint8(np.clip(base, 0, 1) * 255))


def _psnr(a, b):
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / mse)


def _luma(img):
    return float(np.asarray(img.convert("L"), np.float64).mean())


@pytest.mark.parametrize("kind", D.KINDS)
def test_degrade_is_deterministic_by_seed(kind):
    img = _scene()
    a = np.asarray(D.degrade(img, kind, "obvious", seed=5))
    b = np.asarray(D.degrade(img, kind, "obvious", seed=5))
    np.testing.assert_array_equal(a, b)


def test_noise_differs_between_seeds():
    img = _scene()
    a = np.asarray(D.degrade(img, "noise", 3, seed=1))
    b = np.asarray(D.degrade(img, "noise", 3, seed=2))
    assert np.mean(a != b) > 0.5


@pytest.mark.parametrize("kind", ["noise", "blur", "jpeg"])
def test_psnr_falls_with_severity(kind):
    img = _scene()
    psnr = [_psnr(img, D.degrade(img, kind, level, seed=0)) for level in D.LEVELS]
    assert all(a > b for a, b in zip(psnr, psnr[1:])), psnr
    assert psnr[0] < 45  # even "slight" changes the image


def test_darken_lowers_mean_luminance_with_severity():
    img = _scene()
    luma = [_luma(img)] + [_luma(D.degrade(img, "darken", level, seed=0)) for level in D.LEVELS]
    assert all(a > b for a, b in zip(luma, luma[1:])), luma


def test_null_is_identity_and_converts_to_rgb():
    img = _scene()
    np.testing.assert_array_equal(np.asarray(D.degrade(img, "null", None, seed=0)), np.asarray(img))
    rgba = img.convert("RGBA")
    assert D.degrade(rgba, "null", None, seed=0).mode == "RGB"


def test_degrade_rejects_unknown_kind_or_level():
    with pytest.raises(ValueError, match="unknown degradation"):
        D.degrade(_scene(), "rain", "slight", seed=0)
    with pytest.raises(ValueError, match="severity"):
        D.degrade(_scene(), "blur", "extreme", seed=0)
    with pytest.raises(ValueError, match="severity"):
        D.degrade(_scene(), "blur", 6, seed=0)


def test_synthetic_mos_falls_with_severity():
    mos = [D.synthetic_mos("null", None)] + [D.synthetic_mos("blur", lv) for lv in D.LEVELS]
    assert mos == pytest.approx([5.0, 4.2, 3.4, 2.6, 1.8, 1.0])


@pytest.fixture
def src(tmp_path):
    folder = tmp_path / "src"
    (folder / "sub").mkdir(parents=True)
    _scene(1).save(folder / "a.png")
    _scene(2, h=300, w=400).save(folder / "sub" / "b.jpg", quality=95)
    _scene(3).save(folder / "a.jpg", quality=95)  # same stem as a.png: must not collide
    (folder / "broken.jpg").write_bytes(b"not an image at all")
    (folder / "notes.txt").write_text("ignored")
    return folder


def test_generate_writes_images_labels_and_report(src, tmp_path):
    out = tmp_path / "out"
    report = D.generate_degradation_set(src, out, seed=7, mode="all", resize_short=64, progress=False)
    assert (report.n_sources, report.n_unreadable, report.n_written) == (4, 1, 3 * 21)
    assert report.unreadable[0]["path"].endswith("broken.jpg")
    assert json.loads((out / "report.json").read_text())["n_unreadable"] == 1

    loaded = load_labels(out / "labels.jsonl", check_files=True)
    assert loaded.format == "plain" and loaded.n_bad == 0 and len(loaded.records) == 63
    classes = {r.distortion_class for r in loaded.records}
    assert classes == {"noise", "blur", "compression", "darken", "null"}
    for r in loaded.records:
        expected = 5.0 if r.severity == "null" else D.synthetic_mos(r.distortion_class, r.severity)
        assert r.mos == pytest.approx(expected)
        with Image.open(r.image) as im:
            assert min(im.size) == 64  # every output, null included, has the same short side
    assert len({r.image for r in loaded.records}) == 63


def test_generate_is_deterministic_by_seed(src, tmp_path):
    def run(name, seed):
        out = tmp_path / name
        D.generate_degradation_set(src, out, seed=seed, resize_short=48, null_fraction=0.3, progress=False)
        lines = (out / "labels.jsonl").read_text().splitlines()
        pixels = [np.asarray(Image.open(out / json.loads(x)["image"])) for x in lines]
        return lines, pixels

    lines1, pix1 = run("one", 11)
    lines2, pix2 = run("two", 11)
    assert lines1 == lines2
    for a, b in zip(pix1, pix2):
        np.testing.assert_array_equal(a, b)
    plans = {tuple(run(f"s{s}", s)[0]) for s in range(6)}
    assert len(plans) > 1  # different seeds draw different (kind, level) assignments


def test_generate_rejects_bad_arguments(src, tmp_path):
    with pytest.raises(NotADirectoryError):
        D.generate_degradation_set(tmp_path / "missing", tmp_path / "o", seed=0, progress=False)
    with pytest.raises(ValueError, match="kinds"):
        D.generate_degradation_set(src, tmp_path / "o", seed=0, kinds=["rain"], progress=False)
