"""SFT trajectory data (train/sft_data.py): label masking, crop rendering, bad records, buckets and collation."""

import json

import numpy as np
import pytest

from zoomiqa_jax.config import ModelConfig
from zoomiqa_jax.data.synthetic import make_scene
from zoomiqa_jax.data.trajectories import make_trajectory
from zoomiqa_jax.processing.crop import crop_and_zoom, crop_box
from zoomiqa_jax.processing.image import ImageLoadError, load_image, num_image_tokens, preprocess_images
from zoomiqa_jax.processing.prompts import zoomiqa_stage1_messages, zoomiqa_stage2_messages
from zoomiqa_jax.processing.tokenizer import IMAGE_PAD, TINY_TOKENIZER_DIR, load_tokenizer, render_chat
from zoomiqa_jax.train.sft_data import (
    IGNORE_INDEX,
    SequenceTooLongError,
    SFTBuckets,
    SFTDataError,
    add_model_inputs,
    build_example,
    build_examples,
    collate,
    iter_examples,
    load_sft_jsonl,
    parse_record,
)


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(TINY_TOKENIZER_DIR)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A 84 x 60 image and a JSONL with a crop record and a one-turn record (generated texts)."""
    d = tmp_path_factory.mktemp("sft")
    make_scene(7, 84, 60).save(d / "img.png")
    crop = make_trajectory({"image": "a.png", "distortion_class": "blur", "severity": "serious"}, "img.png", 0, True)
    final = make_trajectory({"image": "b.png", "distortion_class": "noise", "severity": "slight"}, "img.png", 0, False)
    (d / "sft.jsonl").write_text(json.dumps(crop) + "\n\n" + json.dumps(final) + "\n")
    return d


@pytest.fixture(scope="module")
def records(data_dir):
    loaded = load_sft_jsonl(data_dir / "sft.jsonl", strict=True)
    assert [r.crops for r in loaded.records] == [True, False]
    return loaded.records


def _enc(tok, text):
    return list(tok(text, add_special_tokens=False)["input_ids"])


def _expand(tok, ids, grids):
    """Each image pad -> its grid's number of merged-patch tokens."""
    pad, it, out = tok.convert_tokens_to_ids(IMAGE_PAD), iter(grids), []
    for t in ids:
        out.extend([pad] * num_image_tokens(next(it)) if t == pad else [t])
    return out


def test_crop_trajectory_labels_exactly_the_generated_tokens(tok, records):
    rec = records[0]
    ex = build_example(rec, tok)
    text1, text2 = rec.turns[0].text, rec.turns[1].text
    stop = tok.convert_tokens_to_ids("<|im_end|>")
    rendered = tok.apply_chat_template(zoomiqa_stage2_messages(rec.question, text1), tokenize=False,
                                       add_generation_prompt=True)
    before, after = rendered.split(text1)
    assert after.startswith("<|im_end|>")
    grids = ex.image_grid_thw.tolist()
    pieces = [  # (ids, generated?) in order
        (_enc(tok, before), False),
        (_enc(tok, text1) + [stop], True),
        (_expand(tok, _enc(tok, after[len("<|im_end|>"):]), grids), False),
        (_enc(tok, text2) + [stop], True),
    ]
    want_ids = [t for ids, _ in pieces for t in ids]
    want_labels = [t if gen else IGNORE_INDEX for ids, gen in pieces for t in ids]
    np.testing.assert_array_equal(ex.input_ids, want_ids)
    np.testing.assert_array_equal(ex.labels, want_labels)
    np.testing.assert_array_equal(ex.attention_mask, np.ones(len(want_ids)))
    # The same layout as the chat template rendering the whole conversation (minus the trailing newline).
    whole = zoomiqa_stage2_messages(rec.question, text1) + [{"role": "assistant", "content": text2}]
    canonical = render_chat(tok, whole, grids, add_generation_prompt=False)
    assert canonical[-1] == _enc(tok, "\n")[0]
    np.testing.assert_array_equal(ex.input_ids, canonical[:-1])
    kept = ex.labels[ex.labels != IGNORE_INDEX]
    assert tok.decode(kept.tolist(), skip_special_tokens=True) == text1 + text2
    assert (kept == stop).sum() == 2


def test_image_tokens_of_original_and_crop_are_masked(tok, records):
    ex = build_example(records[0], tok)
    pad = tok.convert_tokens_to_ids(IMAGE_PAD)
    is_image = ex.input_ids == pad
    assert len(ex.image_grid_thw) == 2
    assert is_image.sum() == sum(num_image_tokens(g) for g in ex.image_grid_thw)
    assert (ex.labels[is_image] == IGNORE_INDEX).all()


def test_crop_pixels_equal_crop_and_zoom_of_the_original(tok, records):
    rec = records[0]
    ex = build_example(rec, tok)
    original = load_image(rec.image)
    box = crop_box(rec.turns[0].bbox, *original.size)
    assert ex.crop_pixels == box.pixel
    orig_pv, orig_grid = preprocess_images([original])
    crop_pv, crop_grid = preprocess_images([crop_and_zoom(original, rec.turns[0].bbox)])
    np.testing.assert_array_equal(ex.pixel_values, np.concatenate([orig_pv, crop_pv]))
    np.testing.assert_array_equal(ex.image_grid_thw, np.concatenate([orig_grid, crop_grid]))


def test_one_turn_record_labels_only_the_reply(tok, records):
    rec = records[1]
    ex = build_example(rec, tok)
    prompt = render_chat(tok, zoomiqa_stage1_messages(rec.question), ex.image_grid_thw.tolist())
    reply = _enc(tok, rec.turns[0].text) + [tok.convert_tokens_to_ids("<|im_end|>")]
    np.testing.assert_array_equal(ex.input_ids, prompt + reply)
    np.testing.assert_array_equal(ex.labels, [IGNORE_INDEX] * len(prompt) + reply)


def test_per_round_examples_train_each_round_under_its_own_prompt(tok, records):
    rec = records[0]
    first, second = build_examples(rec, tok, per_round=True)
    stop = tok.convert_tokens_to_ids("<|im_end|>")
    reply1 = _enc(tok, rec.turns[0].text) + [stop]
    assert len(first.image_grid_thw) == 1 and first.labels[-len(reply1):].tolist() == reply1
    assert (first.labels != IGNORE_INDEX).sum() == len(reply1)
    full = build_example(rec, tok)
    np.testing.assert_array_equal(second.input_ids, full.input_ids)
    assert (second.labels != IGNORE_INDEX).sum() == len(_enc(tok, rec.turns[1].text)) + 1


def _bad_lines(data_dir):
    good = json.loads((data_dir / "sft.jsonl").read_text().splitlines()[0])
    t1, t2 = good["turns"]

    def variant(**changes):
        rec = dict(good, **changes)
        return json.dumps({k: v for k, v in rec.items() if v is not None})

    return [  # (line, field named in the error)
        ("{not json", "not valid JSON"),
        (variant(mos=None), "'mos'"),
        (variant(mos="3.2"), "'mos'"),
        (variant(image="missing.png"), "'image'"),
        (variant(extra=1), "'extra'"),
        (variant(turns=[t1, t2, t2]), "'turns'"),
        (variant(turns=[{"text": t1["text"]}, t2]), "'turns[0].bbox'"),
        (variant(turns=[dict(t1, bbox=[0.1, 0.1, 1.5, 0.9]), t2]), "'turns[0].bbox'"),
        (variant(turns=[dict(t1, bbox=[0.0, 0.0, 0.5, 0.5]), t2]), "differs from the answer"),
        (variant(turns=[t1, dict(t2, bbox=[0, 0, 1, 1])]), "'turns[1].bbox'"),
        (variant(turns=[t1, {"text": t2["text"] + "<|im_end|>"}]), "'turns[1].text'"),
        (variant(turns=[t1, {"text": "rating 3"}]), "Zoom-IQA format"),
        (variant(turns=[t1, {"text": t2["text"], "box": 1}]), "'turns[1].box'"),
    ]


def test_bad_records_are_counted_with_file_line_and_field(data_dir):
    cases = _bad_lines(data_dir)
    path = data_dir / "bad.jsonl"
    good_line = (data_dir / "sft.jsonl").read_text().splitlines()[0]
    path.write_text("\n".join([good_line] + [line for line, _ in cases]) + "\n")
    loaded = load_sft_jsonl(path)
    assert len(loaded.records) == 1 and loaded.n_bad == len(cases)
    for (where, message), (_, field), number in zip(loaded.bad, cases, range(2, len(cases) + 2)):
        assert where == f"{path}:{number}" and message.startswith(where) and field in message, message
    with pytest.raises(SFTDataError, match=r"bad.jsonl:2: not valid JSON"):
        load_sft_jsonl(path, strict=True)


def test_parse_record_without_format_check_accepts_free_text(data_dir):
    rec = parse_record({"image": "img.png", "mos": 2, "turns": [{"text": "any reply"}]}, "x:1", data_dir,
                       check_format=False)
    assert rec.turns[0].text == "any reply" and not rec.crops


@pytest.fixture(scope="module")
def examples(tok, records):
    return [build_example(r, tok) for r in records]


@pytest.mark.parametrize("side", ["right", "left"])
def test_collate_pads_to_buckets(tok, examples, side):
    buckets = SFTBuckets(seq_lengths=(1024, 2048, 4096), patch_counts=(64, 256, 1024))
    batch = collate(examples, buckets, pad_token_id=tok.pad_token_id, padding_side=side)
    lengths = [len(e.input_ids) for e in examples]
    t = min(b for b in buckets.seq_lengths if b >= max(lengths))
    n_patches = sum(len(e.pixel_values) for e in examples)
    p = min(b for b in buckets.patch_counts if b >= n_patches)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (2, t)
    assert batch["pixel_values"].shape == (p, examples[0].pixel_values.shape[1])
    assert all(v.dtype != object and isinstance(v, np.ndarray) for v in batch.values())
    assert batch["input_ids"].dtype == np.int32 and batch["pixel_values"].dtype == np.float32
    assert batch["patch_mask"].sum() == n_patches and not batch["pixel_values"][n_patches:].any()
    assert batch["image_counts"].tolist() == [2, 1] and batch["image_grid_thw"].shape == (3, 3)
    for row, ex in enumerate(examples):
        n = lengths[row]
        cols = slice(0, n) if side == "right" else slice(t - n, t)
        np.testing.assert_array_equal(batch["input_ids"][row, cols], ex.input_ids)
        np.testing.assert_array_equal(batch["labels"][row, cols], ex.labels)
        assert batch["attention_mask"][row].sum() == n and batch["attention_mask"][row, cols].all()
        pad = np.ones(t, bool)
        pad[cols] = False
        assert (batch["labels"][row, pad] == IGNORE_INDEX).all()
        assert (batch["input_ids"][row, pad] == tok.pad_token_id).all()


def test_over_long_sequence_is_refused_not_truncated(tok, examples):
    longest = max(len(e.input_ids) for e in examples)
    assert longest > 512
    with pytest.raises(SequenceTooLongError,
                       match=rf"sequence length of example .*{longest} exceeds .* 512 of \[256, 512\]"):
        collate(examples, SFTBuckets(seq_lengths=(256, 512)), pad_token_id=tok.pad_token_id)


def test_patches_past_the_largest_bucket_pad_to_its_next_multiple(tok, examples):
    n = sum(len(e.pixel_values) for e in examples)
    assert n > 16 and n % 16  # so the padding is a true round-up, not an exact fit
    batch = collate(examples, SFTBuckets(patch_counts=(4, 16)), pad_token_id=tok.pad_token_id)
    assert len(batch["pixel_values"]) == 16 * (n // 16 + 1)
    assert batch["patch_mask"].sum() == n and batch["patch_mask"][:n].all()
    np.testing.assert_array_equal(batch["pixel_values"][:n], np.concatenate([e.pixel_values for e in examples]))
    assert not batch["pixel_values"][n:].any()


def test_unreadable_image_is_counted_and_skipped(tok, data_dir, records):
    (data_dir / "broken.png").write_bytes(b"not a png")
    broken = parse_record({"image": "broken.png", "mos": 1.0, "turns": [{"text": "x"}]}, "f.jsonl:9", data_dir,
                          check_format=False)
    bad: list = []
    out = list(iter_examples([broken, records[1]], tok, bad=bad))
    assert [r.where for r, _ in out] == [records[1].where]
    assert bad[0][0] == "f.jsonl:9" and "broken.png" in bad[0][1]
    with pytest.raises(ImageLoadError):
        list(iter_examples([broken], tok, strict=True))


def test_model_inputs_follow_the_padded_batch(tok, examples):
    batch = collate(examples, SFTBuckets(patch_counts=(256,)), pad_token_id=tok.pad_token_id)
    cfg = ModelConfig.tiny()
    full = add_model_inputs(batch, cfg)
    b, t = batch["input_ids"].shape
    assert full["position_ids"].shape == (3, b, t)
    assert (full["position_ids"][:, batch["attention_mask"] == 0] == 0).all()
    assert full["vision_meta"].positions.shape == (256, 2)
