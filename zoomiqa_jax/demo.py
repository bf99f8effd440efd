"""`zoomiqa demo`: the built-in end-to-end run on this machine, no downloads.

1. draws procedural scenes and degrades them (noise / blur / JPEG / darken at five severities, or none) into a
   small IQA set whose MOS falls with severity (`zoomiqa_jax.data.degrade`);
2. writes a tiny random Qwen2.5-VL as a Hugging Face checkpoint (config.json + safetensors + the built-in
   tokenizer) and loads it back through the converter, the path a real checkpoint takes;
3. scores every image with the digit read-out (`zoomiqa_jax.inference.readout`) and reports PLCC / SRCC.

A random model scores at chance (SRCC near 0): the demo shows the pipeline, not a trained model.
Outputs under --out: images/ (+ labels.jsonl), checkpoint/, predictions.jsonl, metrics.json, report.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="zoomiqa demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", default="runs/demo", help="output folder; the demo's own subfolders are replaced")
    p.add_argument("--num-images", type=int, default=24, help="number of synthetic scenes (one image each)")
    p.add_argument("--seed", type=int, default=0, help="seed for scenes, degradations and model weights")
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


def run_demo(out: Path, num_images: int, seed: int) -> dict:
    from zoomiqa_jax.checkpoint.hf import load_hf
    from zoomiqa_jax.data.degrade import generate_degradation_set
    from zoomiqa_jax.data.labels import load_labels
    from zoomiqa_jax.data.synthetic import write_scenes
    from zoomiqa_jax.eval.metrics import score_metrics
    from zoomiqa_jax.inference.readout import expected_ratings
    from zoomiqa_jax.processing.prompts import choose_question
    from zoomiqa_jax.processing.tokenizer import load_tokenizer

    t0 = time.perf_counter()
    for sub in ("scenes", "images", "checkpoint"):
        shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    print(f"[1/3] {num_images} synthetic scenes -> degraded IQA set in {out / 'images'}")
    write_scenes(out / "scenes", num_images, seed=seed)
    generate_degradation_set(out / "scenes", out / "images", seed, progress=False)
    labels = load_labels(out / "images" / "labels.jsonl", fmt="plain", root=out / "images")
    records = labels.records
    print("[2/3] tiny random Qwen2.5-VL -> HF checkpoint -> load_hf")
    ckpt = make_demo_checkpoint(out / "checkpoint", seed)
    model, _ = load_hf(ckpt)
    tokenizer = load_tokenizer(ckpt)
    print(f"[3/3] scoring {len(records)} images")
    question = choose_question(seed)
    preds = expected_ratings(model, tokenizer, [r.image for r in records], question)
    mos = np.asarray([r.mos for r in records], np.float32)
    metrics = score_metrics(preds, mos).to_dict()
    with open(out / "predictions.jsonl", "w") as f:
        for r, p in zip(records, preds):
            row = {"image": str(Path(r.image).name), "mos": r.mos, "pred": round(float(p), 4),
                   "distortion_class": r.distortion_class, "severity": r.severity}
            f.write(json.dumps(row) + "\n")
    summary = {"images": len(records), "bad_labels": len(labels.bad), "seconds": round(time.perf_counter() - t0, 1),
               "question": question, "metrics": metrics}
    (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_report(out / "report.md", records, preds, summary)
    return summary


def write_report(path: Path, records: list, preds: np.ndarray, summary: dict) -> None:
    m = summary["metrics"]
    fmt = lambda x: "n/a" if x is None else f"{x:.3f}"
    lines = [
        "# zoomiqa demo", "",
        f"{summary['images']} synthetic images, a tiny random Qwen2.5-VL, digit read-out scores, "
        f"{summary['seconds']} s.", "",
        "| PLCC | SRCC | KRCC | RMSE |", "| ---: | ---: | ---: | ---: |",
        f"| {fmt(m.get('plcc'))} | {fmt(m.get('srcc'))} | {fmt(m.get('krcc'))} | {fmt(m.get('rmse'))} |", "",
        "| image | distortion | severity | MOS | predicted |", "| --- | --- | --- | ---: | ---: |",
    ]
    for r, p in zip(records, preds):
        lines.append(f"| {Path(r.image).name} | {r.distortion_class} | {r.severity} | {r.mos:.2f} | {p:.3f} |")
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    summary = run_demo(Path(args.out), args.num_images, args.seed)
    m = summary["metrics"]
    fmt = lambda x: "n/a" if x is None else f"{x:.3f}"
    print(f"\n{summary['images']} images in {summary['seconds']} s: PLCC {fmt(m.get('plcc'))}, "
          f"SRCC {fmt(m.get('srcc'))} (a random model: expect about 0)")
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
