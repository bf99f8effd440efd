"""What the authors' evaluation gives the model (issue 18 items 2, 8, 9): question draw, file loading in the
file's own mode without EXIF transpose, and the stage-1 double resize. Golden cases are read from their
evaluate.py / protocol.py (EthanLiang99/Zoom-IQA, commit f4dee23) and qwen-vl-utils 0.0.10's
vision_process.py, computed by hand in the comments."""

import random

import numpy as np
import pytest
from PIL import Image

from zoomiqa_jax.processing.image import load_image, preprocess_images, smart_resize
from zoomiqa_jax.processing.official import stage2_box, upscale_size
from zoomiqa_jax.processing.official_inputs import (
    OFFICIAL_SEED,
    OfficialQuestion,
    draw_questions,
    fetch_image_size,
    load_official_image,
    official_stage1_image,
    official_stage1_sizes,
    official_stage2_images,
    processor_view,
    record_question,
)

POOL = ("q0", "q1", "q2", "q3", "q4")
# CPython's random.Random(42).choice over 5 items, first 12 draws (Mersenne Twister, stable since 3.2).
SEED42_INDICES = [0, 0, 2, 1, 1, 1, 0, 4, 0, 4, 3, 0]


def own(value=None, content=None, **first):
    entry = dict(first)
    if value is not None:
        entry["value"] = value
    if content is not None:
        entry["content"] = content
    return {"image": "a.png", "gt_score": 3.0, "conversations": [entry, {"from": "gpt", "value": "..."}]}


# ---- item 2: which question an image gets ----

def test_seed_42_draws_in_file_order():
    assert OFFICIAL_SEED == 42
    drawn = draw_questions([{"image": f"{i}.png"} for i in range(12)], POOL)
    assert [q.stage1 for q in drawn] == [POOL[i] for i in SEED42_INDICES]
    assert all(q.drawn and q.history == q.stage1 for q in drawn)


def test_records_with_their_own_question_draw_nothing():
    records = [{}, own("<|image|>Sharp?"), {}, own("Noisy?"), {}]
    drawn = draw_questions(records, POOL)
    assert [q.stage1 for q in drawn] == ["q0", "Sharp?", "q0", "Noisy?", "q2"]  # draws 0, 1, 2 of the seed
    assert [q.drawn for q in drawn] == [True, False, True, False, True]


def test_each_annotation_file_starts_again_from_the_seed():
    first = draw_questions([{}] * 4, POOL)
    second = draw_questions([{}] * 4, POOL)
    assert first == second and [q.stage1 for q in first] == ["q0", "q0", "q2", "q1"]
    other = random.Random(7)
    assert [q.stage1 for q in draw_questions([{}] * 6, POOL, seed=7)] == [other.choice(POOL) for _ in range(6)]


@pytest.mark.parametrize("record, stage1, history", [
    (own("<|image|>How sharp is it?"), "How sharp is it?", "<|image|>How sharp is it?"),
    (own("<|image|>\nHow sharp?"), "\nHow sharp?", "<|image|>\nHow sharp?"),  # no strip
    (own("Q <|image|> R <|image|>"), "Q  R ", "Q <|image|> R <|image|>"),  # every tag
    (own("<|image|>"), "", "<|image|>"),  # strip() of the raw string is not blank
    (own("<image>Q"), "<image>Q", "<image>Q"),  # only <|image|> is removed
    (own("", "From content"), "From content", "From content"),  # falsy value falls through
    (own(content="From content"), "From content", "From content"),
    (own(0, "From content"), "From content", "From content"),
])
def test_record_question_golden_cases(record, stage1, history):
    assert record_question(record) == OfficialQuestion(stage1, history, False)


@pytest.mark.parametrize("record", [
    {},
    {"conversations": []},
    {"conversations": "<|image|>Q?"},
    {"conversations": ("Q?",)},
    {"conversations": ["Q?"]},
    {"conversations": [{"from": "human"}]},
    own("   ", "From content"),  # blank value is truthy: content is not read, then it is blank
    own(["Q?"]),
    own("\n\t"),
])
def test_records_without_a_usable_question_draw(record):
    assert record_question(record) is None
    assert draw_questions([record], POOL) == [OfficialQuestion("q0", "q0", True)]


def test_draw_questions_errors():
    with pytest.raises(ValueError, match="record 1 is not an object"):
        draw_questions([{}, ["x"]], POOL)
    with pytest.raises(ValueError, match="non-empty question pool"):
        draw_questions([{}], ())


# ---- item 9: stage-1 size, fetch_image then the processor ----

@pytest.mark.parametrize("height, width, fetched", [
    # 40 x 3000: round(40/28)=1 -> 28, round(3000/28)=107 -> 2996; 83,888 px inside [3136, 12,845,056].
    (40, 3000, (28, 2996)),
    # 29 x 29: 28 x 28 = 784 < 3136; b = sqrt(3136/841); ceil(29 b / 28) = ceil(2.0) = 2 -> 56.
    (29, 29, (56, 56)),
    # 10 x 2000: max(28, round(10/28) * 28 = 0) = 28, round(2000/28)=71 -> 1988; 55,664 px, kept.
    (10, 2000, (28, 1988)),
    # 1630 x 637: round 58.2 -> 1624, round 22.75 -> 644 (1,045,856 px, under 12,845,056).
    (1630, 637, (1624, 644)),
    # 4000 x 6000: 4004 x 5992 > 12,845,056; b = sqrt(24e6 / 12,845,056) = 1.36690;
    # floor(4000 / b / 28) = floor(104.5) = 104 -> 2912, floor(6000 / b / 28) = floor(156.8) = 156 -> 4368.
    (4000, 6000, (2912, 4368)),
    # 60 x 100: round 2.14 -> 56, round 3.57 -> 112.
    (60, 100, (56, 112)),
])
def test_fetch_image_size_golden(height, width, fetched):
    assert fetch_image_size(height, width) == fetched


def test_fetch_image_size_refuses_ratio_over_200():
    assert fetch_image_size(10, 2000) == (28, 1988)  # ratio 200 exactly is allowed
    with pytest.raises(ValueError, match="aspect ratio must be smaller than 200"):
        fetch_image_size(10, 2001)


@pytest.mark.parametrize("height, width, max_pixels, both, single", [
    # fetch gives 1624 x 644 (1,045,856 > 1,003,520); the processor: b = sqrt(1,045,856 / 1,003,520) = 1.02088,
    # floor(1624 / b / 28) = floor(56.8) = 56 -> 1568, floor(644 / b / 28) = floor(22.5) = 22 -> 616.
    # One resize from 1630 x 637: b = sqrt(1,038,310 / 1,003,520) = 1.01719, floor(57.2) = 57 -> 1596, 616.
    (1630, 637, 1_003_520, ((1624, 644), (1568, 616)), (1596, 616)),
    # 10 x 2000: the processor alone rounds 10 px to 0 and takes its min_pixels branch: b = sqrt(3136 / 20000),
    # ceil(10 b / 28) = 1 -> 28, ceil(2000 b / 28) = ceil(28.3) = 29 -> 812. After fetch it keeps 28 x 1988.
    (10, 2000, 1_003_520, ((28, 1988), (28, 1988)), (28, 812)),
    # 4000 x 6000 with the Qwen2.5-VL processor bound: one resize only; with the 1,003,520 fallback, two.
    (4000, 6000, 12_845_056, ((2912, 4368), (2912, 4368)), (2912, 4368)),
    (4000, 6000, 1_003_520, ((2912, 4368), (812, 1204)), (812, 1204)),
    (40, 3000, 1_003_520, ((28, 2996), (28, 2996)), (28, 2996)),
])
def test_stage1_double_resize_sizes(height, width, max_pixels, both, single):
    assert official_stage1_sizes(height, width, 3136, max_pixels) == both
    assert smart_resize(height, width, min_pixels=3136, max_pixels=max_pixels) == single


def test_stage1_image_resamples_twice_and_the_processor_sees_another_grid():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (1630, 637, 3), dtype=np.uint8))
    fetched = official_stage1_image(image)
    assert fetched.size == (644, 1624) and fetched.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(fetched),
                                  np.asarray(image.resize((644, 1624), Image.Resampling.BICUBIC)))
    _, theirs = preprocess_images(fetched, min_pixels=3136, max_pixels=1_003_520)
    _, single = preprocess_images(image, min_pixels=3136, max_pixels=1_003_520)
    assert theirs.tolist() == [[1, 112, 44]] and single.tolist() == [[1, 114, 44]]


def test_stage1_image_keeps_an_unchanged_size_as_is():
    image = Image.fromarray(np.arange(56 * 112 * 3, dtype=np.uint8).reshape(56, 112, 3))
    np.testing.assert_array_equal(np.asarray(official_stage1_image(image)), np.asarray(image))


# ---- item 8 and stage-1 modes: the file's own mode, no EXIF transpose ----

def _exif_jpeg(path):
    """A 40 x 20 JPEG, left half red, right half blue, with EXIF orientation 6 (shown rotated to 20 x 40)."""
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = (255, 0, 0)
    pixels[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(path, exif=exif.tobytes(), quality=95)
    return path


def test_exif_orientation_is_not_applied(tmp_path):
    path = _exif_jpeg(tmp_path / "rotated.jpg")
    assert load_image(path).size == (20, 40)  # the project's strict loader transposes
    loaded = load_official_image(path)
    assert loaded.size == (40, 20) and loaded.mode == "RGB"
    red, blue = np.asarray(loaded)[10, 5].astype(int), np.asarray(loaded)[10, 35].astype(int)
    assert red[0] > 200 > red[2] and blue[2] > 200 > blue[0]
    # stage 1: 20 x 40 -> 784 px < 3136, b = sqrt(3136 / 800); ceil(20 b / 28) = 2 -> 56, ceil(40 b / 28) = 3 -> 84.
    assert official_stage1_image(path).size == (84, 56)
    # stage 2 cuts the box on the stored 40 x 20 layout
    original, crop_image, crop = official_stage2_images(loaded, [0.5, 0.0, 1.0, 1.0])
    assert original.size == (40, 20) and crop == stage2_box([0.5, 0.0, 1.0, 1.0], 40, 20)


def test_load_official_image_keeps_the_file_mode_and_names_bad_files(tmp_path):
    for mode in ("P", "RGBA", "L", "LA"):
        Image.new(mode, (30, 30)).save(tmp_path / f"{mode}.png")
        assert load_official_image(tmp_path / f"{mode}.png").mode == mode
    Image.new("CMYK", (30, 30), (0, 128, 255, 0)).save(tmp_path / "cmyk.jpg")
    assert load_official_image(tmp_path / "cmyk.jpg").mode == "CMYK"
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.png"):
        load_official_image(tmp_path / "bad.png")
    with pytest.raises(ValueError, match="missing.png"):
        load_official_image(tmp_path / "missing.png")


def _rgba(size=56):
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (size, size, 4), dtype=np.uint8)
    pixels[::2, :, 3] = 0  # transparent rows whose colour still varies
    return Image.frombytes("RGBA", (size, size), pixels.tobytes())


def test_stage1_rgba_is_pasted_on_white_with_its_alpha(tmp_path):
    image = _rgba()
    a = np.asarray(image)[..., 3:].astype(np.int64)
    rgb = np.asarray(image)[..., :3].astype(np.int64)
    expected = (255 * (255 - a) + rgb * a + 127) // 255  # PIL's paste blend, rounded to nearest
    np.testing.assert_array_equal(np.asarray(official_stage1_image(image)), expected)
    image.save(tmp_path / "a.png")
    np.testing.assert_array_equal(np.asarray(official_stage1_image(tmp_path / "a.png")), expected)


def test_stage1_drops_the_alpha_of_la_and_the_transparency_of_palette_images():
    la = Image.new("LA", (56, 56), (10, 0))
    assert np.asarray(official_stage1_image(la)).max() == 10  # fully transparent, still grey 10, not white
    assert np.asarray(load_image(la)).min() == 255  # the processor's rule (stage 2) composites it on white
    p = Image.new("P", (56, 56), 1)
    p.putpalette([0, 0, 0, 20, 30, 40] + [0] * 762)
    p.info["transparency"] = 1
    stage1 = official_stage1_image(p)
    assert np.asarray(stage1).reshape(-1, 3).tolist()[0] == [20, 30, 40] and "transparency" not in stage1.info
    assert np.asarray(load_image(p)).reshape(-1, 3).tolist()[0] == [255, 255, 255]


def test_stage1_cmyk_and_l_convert_plainly(tmp_path):
    Image.new("CMYK", (56, 56), (0, 128, 255, 0)).save(tmp_path / "c.jpg")
    cmyk = Image.open(tmp_path / "c.jpg")
    np.testing.assert_array_equal(np.asarray(official_stage1_image(tmp_path / "c.jpg")),
                                  np.asarray(cmyk.convert("RGB")))
    grey = Image.fromarray((np.arange(56 * 56) % 256).astype(np.uint8).reshape(56, 56))
    np.testing.assert_array_equal(np.asarray(official_stage1_image(grey)),
                                  np.repeat(np.asarray(grey)[..., None], 3, axis=-1))


# ---- item 8, stage 2: crop and upscale in the file's mode; the processor's RGB rule after ----

BOX = [0.1, 0.2, 0.6, 0.5]


def _region_and_size(image):
    crop = stage2_box(BOX, *image.size)
    region = image.crop(crop.pixel)
    return region, upscale_size(region.width, region.height, *image.size)


def test_palette_crop_is_resampled_nearest_and_stays_palette():
    rng = np.random.default_rng(2)
    p = Image.frombytes("P", (90, 60), rng.integers(0, 8, 90 * 60, dtype=np.uint8).tobytes())
    p.putpalette(list(rng.integers(0, 256, 8 * 3)) + [0] * (768 - 24))
    original, crop_image, _ = official_stage2_images(p, BOX)
    region, size = _region_and_size(p)
    assert original is p and crop_image.mode == "P" and crop_image.size == size
    np.testing.assert_array_equal(np.asarray(crop_image), np.asarray(region.resize(size, Image.Resampling.NEAREST)))
    assert set(np.unique(np.asarray(crop_image))) <= set(np.unique(np.asarray(region)))  # indices, not blends


def test_rgba_crop_is_resized_before_compositing_on_white():
    image = _rgba(90)
    _, crop_image, _ = official_stage2_images(image, BOX)
    region, size = _region_and_size(image)
    assert crop_image.mode == "RGBA"
    resized_first = region.resize(size, Image.Resampling.LANCZOS)  # PIL: premultiplied alpha
    white = Image.new("RGBA", size, (255, 255, 255, 255))
    expected = Image.alpha_composite(white, resized_first).convert("RGB")
    np.testing.assert_array_equal(np.asarray(load_image(crop_image)), np.asarray(expected))
    composited_first = Image.alpha_composite(Image.new("RGBA", region.size, (255, 255, 255, 255)), region)
    other = composited_first.convert("RGB").resize(size, Image.Resampling.LANCZOS)
    assert np.abs(np.asarray(other).astype(int) - np.asarray(expected).astype(int)).max() > 0


@pytest.mark.parametrize("mode", ["L", "LA", "CMYK", "RGB"])
def test_l_la_cmyk_crops_keep_their_mode(mode):
    rng = np.random.default_rng(3)
    image = Image.frombytes(mode, (90, 60), rng.integers(0, 256, 90 * 60 * len(mode), dtype=np.uint8).tobytes())
    _, crop_image, crop = official_stage2_images(image, BOX)
    region, size = _region_and_size(image)
    assert crop_image.mode == mode and not crop.fallback
    np.testing.assert_array_equal(np.asarray(crop_image), np.asarray(region.resize(size, Image.Resampling.LANCZOS)))


def test_central_fallback_keeps_the_mode_and_is_not_upscaled():
    image = Image.new("LA", (90, 60), (40, 128))
    _, crop_image, crop = official_stage2_images(image, [0, 0, 0, 0])
    assert crop.fallback and crop_image.mode == "LA" and crop_image.size == (45, 30)


def _transformers4_convert_to_rgb(image):
    """transformers 4.x image_transforms.convert_to_rgb, as read: RGB untouched, else RGBA onto white."""
    if image.mode == "RGB":
        return image
    rgba = image.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255)), rgba).convert("RGB")


def _modes():
    rng = np.random.default_rng(4)
    pixels = rng.integers(0, 4, (12, 12, 3), dtype=np.uint8) * 80
    pixels[0, :4] = 80  # four pixels of the colour key
    rgb = Image.fromarray(pixels)
    keyed = rgb.copy()
    keyed.info["transparency"] = (80, 80, 80)
    p = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    p_keyed = p.copy()
    p_keyed.info["transparency"] = 0
    return {"RGB": rgb, "RGB+key": keyed, "P": p, "P+key": p_keyed, "L": rgb.convert("L"),
            "LA": _rgba(12).convert("LA"), "RGBA": _rgba(12), "CMYK": rgb.convert("CMYK"), "1": rgb.convert("1")}


@pytest.mark.parametrize("name", list(_modes()))
def test_processor_view_gives_the_authors_processor_rgb(name):
    image = _modes()[name]
    np.testing.assert_array_equal(np.asarray(load_image(processor_view(image))),
                                  np.asarray(_transformers4_convert_to_rgb(image)))


def test_an_rgb_colour_key_is_whitened_by_the_project_rule_only():
    keyed = _modes()["RGB+key"]
    assert (np.asarray(load_image(keyed)) == 255).all(axis=-1).sum() > (np.asarray(keyed) == 255).all(-1).sum()
    assert "transparency" in keyed.info and "transparency" not in processor_view(keyed).info
