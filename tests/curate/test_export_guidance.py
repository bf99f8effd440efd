"""`zoomiqa score --export-guidance FILE` (issue 19, the paper's Sec. 4 restoration application): one
'IMAGE<TAB>PROMPT' line per image holding the deciding round's "Directions for Improvement" paragraph (stage 2
after a crop), empty when the reply has none; a missing folder exits 2 before the model loads."""

import io

import numpy as np
import pytest
from PIL import Image

from tests.inference.test_zoom import CROP, FINAL, STAGE2, Scripted
from zoomiqa_jax.inference import engine
from zoomiqa_jax.score import score_main

FAST = ["--max-new-tokens", "8", "--dtype", "float32", "--batch-size", "4", "--quiet"]


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint):
    return str(tiny_checkpoint)


def test_guidance_file_holds_each_images_directions(checkpoint, tiny_tokenizer, tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    paths = []
    for name in ("a_crop.png", "b_final.png", "c_none.png"):
        Image.fromarray(rng.integers(0, 255, (56, 84, 3), dtype=np.uint8)).save(tmp_path / name)
        paths.append(str(tmp_path / name))
    tok = tiny_tokenizer
    # the question is drawn per image; the script answers by the round instead: image a crops, b is final, c
    # has no labelled sections
    seen = []

    def pick(prompt):
        if "<|im_start|>" not in prompt:  # a one-token filler row of the padded batch
            return ""
        if prompt.count("<|vision_start|>") == 2:  # stage 2: the original and the crop
            return STAGE2
        seen.append(prompt)
        return (CROP, FINAL, "<answer>{\"rating\": 3}</answer>")[len(seen) - 1]

    monkeypatch.setattr(engine, "generate", Scripted(tok, pick=pick))
    guidance = tmp_path / "guidance.txt"
    code = score_main(["--checkpoint", checkpoint, *paths, "--export-guidance", str(guidance), *FAST],
                      out=io.StringIO(), err=io.StringIO())
    assert code == 0
    lines = guidance.read_text().split("\n")
    assert lines[-1] == "" and len(lines) == 4
    assert lines[:3] == [f"{paths[0]}\tthe sky is 1 noisy.", f"{paths[1]}\tthe sky is 1 noisy.", f"{paths[2]}\t"]


def test_missing_guidance_folder_exits_2(checkpoint, tmp_path):
    err = io.StringIO()
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((56, 56, 3), np.uint8)).save(image)
    code = score_main(["--checkpoint", checkpoint, str(image), "--export-guidance", str(tmp_path / "no" / "g.txt")],
                      out=io.StringIO(), err=err)
    assert code == 2 and "--export-guidance" in err.getvalue()
