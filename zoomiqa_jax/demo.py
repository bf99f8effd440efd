"""`zoomiqa demo`: the built-in end-to-end run on this machine, no downloads.

1. draws procedural scenes and degrades them (noise / blur / JPEG / darken at five severities, or none) into a
   small IQA set whose MOS falls with severity (`zoomiqa_jax.data.degrade`);
2. writes a tiny random Qwen2.5-VL as a Hugging Face checkpoint (config.json + safetensors + the built-in
   tokenizer), the path a real checkpoint takes;
3. runs the evaluation (`zoomiqa eval`, the Zoom-IQA protocol: greedy, --max-turns rounds of at most
   --max-new-tokens tokens) over the set and writes its report;
4. scores every image with the digit read-out (`zoomiqa_jax.inference.readout`: the expected rating over the
   tokens "1".."5" after the question), which gives a score for every image even from a random model.

A random model (almost) never writes a valid answer in the Zoom-IQA format: the eval report says so
(valid-format rate near 0%, invalid outputs counted by class, correlations n/a); no rating is ever made up.
The read-out scores are at chance (SRCC near 0). The demo shows the pipeline, not a trained model.

Outputs under --out (the demo's own files are replaced on a rerun):
    images/ (+ labels.jsonl), checkpoint/      the synthetic set and the tiny random model
    report.md, metrics.json, predictions.jsonl, run_config.json, environment.json, plots/
                                               the eval run (see `zoomiqa eval --help`); report.md ends
                                               with a section on the read-out scores
    readout/predictions.jsonl, readout/metrics.json
                                               digit read-out score per image and its PLCC / SRCC
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

DEMO_OUTPUTS = ("scenes", "images", "checkpoint", "plots", "readout", "report.md", "metrics.json",
                "run_config.json", "environment.json")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of `zoomiqa demo`."""
    p = argparse.ArgumentParser(
        prog="zoomiqa demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", default="runs/demo", help="output folder; the demo's own files in it are replaced "
                   "(default runs/demo)")
    p.add_argument("--num-images", type=int, default=16,
                   help="number of synthetic scenes, one degraded image each (default 16)")
    p.add_argument("--seed", type=int, default=0, help="seed for scenes, degradations and model weights (default 0)")
    p.add_argument("--max-new-tokens", type=int, default=48,
                   help="new tokens per eval round (default 48; a real model needs ~1024 to finish its reasoning)")
    p.add_argument("--max-turns", type=int, choices=(1, 2), default=2,
                   help="Zoom-IQA rounds per image in the eval (default 2)")
    p.add_argument("--batch-size", type=int, default=8, help="images per sampler call in the eval (default 8)")
    p.add_argument("--no-progress", action="store_true", help="hide the eval's progress bar")
    return p


def make_demo_checkpoint(out_dir: Path, seed: int) -> Path:
    """A random `ModelConfig.tiny()` model written as an HF directory with the tiny tokenizer."""
    from flax import nnx

    from zoomiqa_jax.checkpoint.hf import save_hf
    from zoomiqa_jax.config import ModelConfig
    from zoomiqa_jax.model import Qwen25VL
    from zoomiqa_jax.processing.tokenizer import TINY_TOKENIZER_DIR

    model = Qwen25VL(ModelConfig.tiny(), rngs=nnx.Rngs(seed))
    return save_hf(model, out_dir, tokenizer_dir=TINY_TOKENIZER_DIR, overwrite=True)


def _clear(out: Path) -> None:
    """Remove the demo's own outputs (and every predictions*.jsonl) so a rerun never resumes an old run."""
    for name in DEMO_OUTPUTS:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    for path in out.glob("predictions*.jsonl"):
        path.unlink()


def eval_argv(out: Path, labels: Path, checkpoint: Path, *, max_new_tokens: int, max_turns: int, batch_size: int,
              seed: int, progress: bool) -> list[str]:
    """The `zoomiqa eval` command line the demo runs (greedy, float32, images at most 224 x 224 pixels)."""
    argv = ["--checkpoint", str(checkpoint), "--labels", str(labels), "--label-format", "plain", "--out", str(out),
            "--prompt", "zoomiqa", "--max-turns", str(max_turns), "--max-new-tokens", str(max_new_tokens),
            "--temperature", "0", "--seed", str(seed), "--dtype", "float32", "--batch-size", str(batch_size),
            "--max-pixels", str(224 * 224)]
    return argv if progress else [*argv, "--no-progress"]


def run_readout(out: Path, checkpoint: Path, records: list, seed: int) -> dict[str, Any]:
    """Digit read-out score per image into out/readout/; returns its metrics.json content."""
    from zoomiqa_jax.checkpoint.hf import load_hf
    from zoomiqa_jax.eval.metrics import score_metrics
    from zoomiqa_jax.inference.readout import expected_ratings
    from zoomiqa_jax.processing.prompts import choose_question
    from zoomiqa_jax.processing.tokenizer import load_tokenizer

    model, _ = load_hf(checkpoint)
    tokenizer = load_tokenizer(checkpoint)
    question = choose_question(seed)
    preds = expected_ratings(model, tokenizer, [r.image for r in records], question, max_pixels=224 * 224)
    mos = np.asarray([r.mos for r in records], np.float32)
    (out / "readout").mkdir(parents=True, exist_ok=True)
    with open(out / "readout" / "predictions.jsonl", "w", encoding="utf-8") as f:
        for r, p in zip(records, preds):
            f.write(json.dumps({"image": Path(r.image).name, "mos": r.mos, "pred": round(float(p), 4),
                                "distortion_class": r.distortion_class, "severity": r.severity}) + "\n")
    summary = {"images": len(records), "question": question, "metrics": score_metrics(preds, mos).to_dict()}
    (out / "readout" / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def readout_section(readout: dict[str, Any]) -> list[str]:
    """Markdown lines appended to report.md: the read-out's correlations, labelled as what they are."""
    m = readout["metrics"]
    return ["## Digit read-out scores (demo extra)", "",
            "Not the Zoom-IQA protocol: one forward pass per image with the question "
            f"\"{readout['question']}\" and the answer opened up to its rating (`<answer>{{\"rating\": `); the "
            "score is sum over d in 1..5 of d * p(\"d\"), the probabilities renormalised over the five digit "
            "tokens (`zoomiqa_jax.inference.readout`). It gives every image a score, so even a random model has "
            "correlations (at chance). Files: readout/predictions.jsonl, readout/metrics.json.", "",
            "| images | PLCC | SRCC | KRCC | RMSE |", "| ---: | ---: | ---: | ---: | ---: |",
            f"| {readout['images']} | {_f(m.get('plcc'))} | {_f(m.get('srcc'))} | {_f(m.get('krcc'))} | "
            f"{_f(m.get('rmse'))} |", ""]


def run_demo(out: Path, num_images: int, seed: int, *, max_new_tokens: int = 48, max_turns: int = 2,
             batch_size: int = 8, progress: bool = True) -> dict[str, Any]:
    """Build the set and the checkpoint, run the eval and the read-out; returns the summary printed by `main`."""
    from zoomiqa_jax.data.degrade import generate_degradation_set
    from zoomiqa_jax.data.labels import load_labels
    from zoomiqa_jax.data.synthetic import write_scenes
    from zoomiqa_jax.eval.runner import eval_main

    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    _clear(out)
    print(f"[1/4] {num_images} synthetic scenes -> degraded IQA set in {out / 'images'}")
    write_scenes(out / "scenes", num_images, seed=seed)
    generate_degradation_set(out / "scenes", out / "images", seed, progress=False)
    labels_file = out / "images" / "labels.jsonl"
    labels = load_labels(labels_file, fmt="plain", root=out / "images")
    print("[2/4] tiny random Qwen2.5-VL -> HF checkpoint")
    ckpt = make_demo_checkpoint(out / "checkpoint", seed)
    print(f"[3/4] zoomiqa eval: {len(labels.records)} images, {max_turns} round(s) of <= {max_new_tokens} tokens")
    log, errors = io.StringIO(), io.StringIO()
    argv = eval_argv(out, labels_file, ckpt, max_new_tokens=max_new_tokens, max_turns=max_turns,
                     batch_size=batch_size, seed=seed, progress=progress)
    if eval_main(argv, out=log, err=errors) != 0:
        raise RuntimeError(f"zoomiqa demo: the eval run into {out} failed: {errors.getvalue().strip()}")
    print(f"[4/4] digit read-out scores for {len(labels.records)} images")
    readout = run_readout(out, ckpt, labels.records, seed)
    report = out / "report.md"
    report.write_text(report.read_text(encoding="utf-8") + "\n" + "\n".join(readout_section(readout)) + "\n",
                      encoding="utf-8")
    evaluation = json.loads((out / "metrics.json").read_text())["datasets"]
    return {"images": len(labels.records), "bad_labels": len(labels.bad), "eval": evaluation, "readout": readout,
            "seconds": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    """`zoomiqa demo`; returns the exit status (2 for a bad flag)."""
    args = build_parser().parse_args(argv)
    if args.num_images < 1 or args.max_new_tokens < 1 or args.batch_size < 1:
        print("error: --num-images, --max-new-tokens and --batch-size must be >= 1", file=sys.stderr)
        return 2
    summary = run_demo(Path(args.out), args.num_images, args.seed, max_new_tokens=args.max_new_tokens,
                       max_turns=args.max_turns, batch_size=args.batch_size, progress=not args.no_progress)
    print(f"\n{summary['images']} images in {summary['seconds']} s")
    for name, m in summary["eval"].items():
        invalid = ", ".join(f"{k} {v}" for k, v in m["invalid_by_class"].items()) or "none"
        s = m["scores"]
        print(f"eval ({name}): valid format {m['n_valid']}/{m['n']} (invalid: {invalid}), "
              f"PLCC {_f(s.get('plcc'))}, SRCC {_f(s.get('srcc'))}")
    r = summary["readout"]["metrics"]
    print(f"digit read-out: PLCC {_f(r.get('plcc'))}, SRCC {_f(r.get('srcc'))} (a random model: expect about 0)")
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
