"""`zoomiqa score` / `zoomiqa compare` (issue 3, CLI): a folder with a corrupt image scores the good ones and
names the bad one; --json lines parse; a scripted crop shows the zoom and the rating; --help covers every flag."""

import io
import json

import numpy as np
import pytest
from flax import nnx
from PIL import Image

from tests.inference.test_zoom import CROP, STAGE2, Scripted
from zoomiqa_jax import cli
from zoomiqa_jax.checkpoint.hf import save_hf
from zoomiqa_jax.config import ModelConfig
from zoomiqa_jax.inference import engine
from zoomiqa_jax.model import Qwen25VL
from zoomiqa_jax.processing.tokenizer import TINY_TOKENIZER_DIR, load_tokenizer
from zoomiqa_jax.score import build_parser, compare_main, score_main

FAST = ["--max-new-tokens", "8", "--dtype", "float32", "--batch-size", "2"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = Qwen25VL(ModelConfig.tiny(), rngs=nnx.Rngs(0))
    return str(save_hf(model, tmp_path_factory.mktemp("ckpt") / "tiny", tokenizer_dir=TINY_TOKENIZER_DIR))


@pytest.fixture()
def folder(tmp_path):
    rng = np.random.default_rng(0)
    for name, (h, w) in {"good1.png": (56, 84), "good2.png": (70, 56)}.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(tmp_path / name)
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return tmp_path


def run(main, argv):
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_folder_with_corrupt_image_scores_the_rest(checkpoint, folder, tmp_path):
    jsonl = tmp_path / "out.jsonl"
    code, out, err = run(score_main, ["--checkpoint", checkpoint, str(folder), "--json", str(jsonl), *FAST])
    assert code == 0, err
    assert f"skipped {folder / 'corrupt.png'}" in err and f"unreadable: {folder / 'corrupt.png'}" in out
    assert "scored 2 of 3 images" in out
    for name in ("good1.png", "good2.png"):
        assert f"== {folder / name} [" in out
    records = {r["image"]: r for r in map(json.loads, jsonl.read_text().splitlines())}
    assert set(records) == {str(folder / n) for n in ("corrupt.png", "good1.png", "good2.png")}
    assert records[str(folder / "corrupt.png")]["invalid"] == "unreadable"
    good = records[str(folder / "good1.png")]
    assert good["image_size"] == [84, 56] and good["turns"] == len(good["rounds"]) >= 1
    assert {"rating", "boxes", "restoration_prompts", "routing_warnings", "hit_token_limit"} <= set(good)
    assert (good["rating"] is None) == (good["invalid"] is not None)  # a random model: rated or invalid, never made up
    assert "token_ids" not in good


def test_scripted_crop_prints_zoom_and_rating(checkpoint, folder, tmp_path, monkeypatch):
    tok = load_tokenizer(TINY_TOKENIZER_DIR)
    # either protocol's crop label ("Cropped Image: " official, the default; "Cropped image: " strict)
    pick = lambda p: STAGE2 if "cropped image" in p.lower() else CROP  # noqa: E731
    monkeypatch.setattr(engine, "generate", Scripted(tok, pick=pick))
    jsonl = tmp_path / "out.jsonl"
    image = str(folder / "good1.png")
    code, out, _ = run(score_main, ["--checkpoint", checkpoint, image, "--json", str(jsonl), "--json-tokens", *FAST])
    assert code == 0
    assert "-- round 1" in out and "-- round 2" in out and "rating 1.50" in out
    assert "zoom: requested [0.1, 0.1, 0.5, 0.6] -> crop pixels [" in out
    (record,) = map(json.loads, jsonl.read_text().splitlines())
    assert record["rating"] == 1.5 and record["turns"] == 2 and len(record["boxes"]) == 1
    assert record["restoration_prompts"]["positive"] and len(record["token_mask"]) == len(record["token_ids"])
    code, out, _ = run(score_main, ["--checkpoint", checkpoint, image, "--no-zoom", "--quiet", *FAST])
    assert code == 0 and out.startswith(f"{image}\trating 3.25")


def test_compare_and_all_unreadable(checkpoint, folder, monkeypatch):
    tok = load_tokenizer(TINY_TOKENIZER_DIR)
    monkeypatch.setattr(engine, "generate", Scripted(tok, ["<think>B is sharper</think><answer>Image B</answer>"]))
    a, b = str(folder / "good1.png"), str(folder / "good2.png")
    code, out, _ = run(compare_main, ["--checkpoint", checkpoint, "--ref", a, a, b, *FAST[:4]])
    assert code == 0 and f"better: Image B ({b})" in out
    code, out, err = run(score_main, ["--checkpoint", checkpoint, str(folder / "corrupt.png"), *FAST])
    assert code == 1 and "corrupt.png" in err and "scored 0 of 1" in out


def test_missing_paths_exit_2_before_the_model_loads(folder, tmp_path, monkeypatch):
    import zoomiqa_jax.checkpoint.loading as loading

    def no_loading(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("the model was loaded before the paths were checked")

    monkeypatch.setattr(loading, "load_checkpoint", no_loading)
    good, ckpt = str(folder / "good1.png"), str(tmp_path)
    code, out, err = run(score_main, ["--checkpoint", ckpt, good, "missing.png", "gone/", *FAST])
    assert code == 2 and out == ""
    assert "error: missing.png: no such file or folder" in err and "error: gone/: no such file or folder" in err
    code, _, err = run(score_main, ["--checkpoint", str(tmp_path / "nope"), good, "--tokenizer", "tok/",
                                    "--prompt-file", "p.yaml", "--json", "no/dir/out.jsonl"])
    assert code == 2
    for message in (f"--checkpoint {tmp_path / 'nope'}: no such directory", "--tokenizer tok/: no such directory",
                    "--prompt-file p.yaml: no such file", "--json no/dir/out.jsonl: folder"):
        assert message in err, err
    code, _, err = run(compare_main, ["--checkpoint", ckpt, good, "b_missing.png"])
    assert code == 2 and "error: b_missing.png: no such file or folder" in err
    from zoomiqa_jax.eval.runner import eval_main

    code, _, err = run(eval_main, ["--checkpoint", str(tmp_path / "nope"), "--labels", "labels_missing.jsonl"])
    assert code == 2 and "--checkpoint" in err and "labels_missing.jsonl: no such file or folder" in err


@pytest.mark.parametrize("command", ["score", "compare"])
def test_help_explains_every_flag(command, capsys):
    parser = build_parser(command)
    assert all(action.help for action in parser._actions)
    with pytest.raises(SystemExit) as exit_:
        cli.main([command, "--help"])
    assert exit_.value.code == 0
    assert "--checkpoint" in capsys.readouterr().out
