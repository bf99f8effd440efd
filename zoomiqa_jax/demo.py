"""`zoomiqa demo`: the built-in end-to-end run on this machine, no downloads: data -> SFT -> GRPO -> evaluation.

1. data: procedural scenes darkened (`data.trajectories.DEMO_KINDS`) at five severities (or left clean), MOS
   falling with severity (`zoomiqa_jax.data.degrade`); of the darkened images, LOCAL_FRACTION have the flaw in
   one patch of known position and size (small to large), the rest all over. A training set with synthetic
   Zoom-IQA trajectories (four labelled sections naming the distortion and its severity, a rating tied to the
   severity; compact style, `zoomiqa_jax.data.trajectories`) that crop exactly when the flaw is a patch of side
   <= 0.5, with a box covering it, a provisional first-round rating and the right one after the crop; and a
   separate held-out set made the same way;
2. a tiny random Qwen2.5-VL (`ModelConfig.tiny`, a few MB) written as a Hugging Face checkpoint;
3. evaluation of the random model on the held-out set (`zoomiqa eval`, the Zoom-IQA protocol, greedy);
4. SFT (`zoomiqa train sft`, the settings of configs/sft_tiny.yaml), then evaluation;
5. GRPO from the SFT weights (`zoomiqa train grpo`, the settings of configs/grpo_tiny.yaml: Zoom-IQA rewards,
   G samples per image, KL-Coverage), then evaluation; the GRPO reward of the SFT and of the GRPO weights on the
   held-out images, sampled as in training with one fixed seed (`train.grpo_loop.sampled_reward`);
6. report.md: the held-out valid-format rate, PLCC and SRCC after each stage; the zoom after each stage
   (`eval.zoom_metrics`: crop rate on local-flaw, global-flaw and clean images, IoU of the requested box with
   the flaw patch, round-1 vs round-2 rating error on cropped images); the held-out GRPO reward before and
   after GRPO, and the per-step GRPO reward curve.

The prompts are short (zoomiqa_jax/assets/demo_prompts.yaml) so that sequences stay short on a CPU; the
evaluation uses the same prompts. Ratings that do not parse are counted as invalid, never made up.

Outputs under --out: data/, heldout/, init/ (random HF checkpoint), sft/ and grpo/ (runs: config.yaml,
metrics.jsonl, tensorboard/, checkpoints/, final/), eval/{init,sft,grpo}/ (the eval reports), report.md,
summary.json, and the marker file .zoomiqa-demo. The demo writes only into a folder that does not exist, is empty,
or carries its marker; a rerun replaces just the outputs named here and leaves anything else in the folder alone.
A non-empty folder without the marker is refused (exit 2) and nothing in it is touched.

--quick runs every stage with tiny sizes (16 training images, 4 held out, 4 SFT steps, 1 GRPO step of 2 images x
4 samples, 64 new tokens per round): it checks that the install works end to end, in about a minute and a half on
a 2-core CPU; its numbers mean nothing.
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

DEMO_DIRS = ("data", "heldout", "init", "sft", "grpo", "eval")
DEMO_FILES = ("report.md", "summary.json")
MARKER = ".zoomiqa-demo"  # written into --out when the demo takes the folder; only such a folder is ever cleared
DEMO_PROMPTS = Path(__file__).resolve().parent / "assets" / "demo_prompts.yaml"
IMAGE_SIZE = 112  # short side of the synthetic images (pixels); 112 x ~150 -> 48 to 64 image tokens
MAX_PIXELS = 112 * 112 * 2
LOCAL_FRACTION = 0.6  # share of the darkened images (train and held out) whose flaw is one patch

# The demo's SFT run: configs/sft_tiny.yaml holds the same values (a test keeps them equal).
SFT_OVERRIDES = {
    "model.config": "tiny", "model.dtype": "float32", "model.param_dtype": "float32",
    "data.seq_buckets": "[384,640]", "data.max_pixels": str(MAX_PIXELS), "data.batch_size": "8",
    "data.per_round": "true", "data.group_by_length": "true",
    "optim.lr": "3e-3", "optim.warmup_ratio": "0.1", "optim.decay": "cosine", "optim.end_lr_ratio": "0.0",
    "optim.weight_decay": "0.0", "optim.clip_norm": "1.0", "optim.grad_accum": "1",
    "parallel.mesh": "[-1,1,1]", "checkpoint.save_every": "100", "checkpoint.keep": "2", "run.log_every": "20",
}
# The demo's GRPO run: configs/grpo_tiny.yaml holds the same values.
GRPO_OVERRIDES = {
    "model.dtype": "float32", "model.param_dtype": "float32", "data.max_pixels": str(MAX_PIXELS),
    "data.batch_size": "4", "optim.lr": "1e-4", "optim.warmup_ratio": "0.0", "optim.decay": "linear",
    "optim.end_lr_ratio": "1.0", "optim.grad_accum": "1", "optim.clip_norm": "1.0", "parallel.mesh": "[-1,1,1]",
    "checkpoint.save_every": "10", "checkpoint.keep": "2", "run.log_every": "1",
    "grpo.recipe": "zoomiqa", "grpo.group_size": "8", "grpo.epochs": "2", "grpo.mini_batches": "1",
    "grpo.kl_cov": "zoomiqa", "grpo.klc_beta": "0.04", "grpo.klc_top_p": "0.02",
    "grpo.resample_starts": "[0.0,0.5]", "grpo.resample_powers": "[0.0,1.0]",
    "rollout.max_new_tokens": "256", "rollout.max_turns": "2", "rollout.temperature": "1.0",
    "rollout.prompt_buckets": "[256,512]", "rollout.new_token_buckets": "[256]", "rollout.seq_buckets": "[768]",
    "rollout.patch_buckets": "[256,4096,8192]", "rollout.protocol": "official",
}
# The size flags' defaults, and their values under --quick (an explicit flag wins over both).
SIZE_DEFAULTS = {"train_images": 384, "eval_images": 48, "sft_steps": 500, "grpo_steps": 60, "max_new_tokens": 256,
                 "batch_size": 16}
QUICK_SIZES = {"train_images": 16, "eval_images": 4, "sft_steps": 4, "grpo_steps": 1, "max_new_tokens": 64,
               "batch_size": 4}
# --quick: one SFT shape (of two), short rollouts, small groups and one pass over them (no pi_old to compile);
# compiling dominates its time.
QUICK_SFT_OVERRIDES = {"data.seq_buckets": "[640]"}
QUICK_GRPO_OVERRIDES = {
    "data.batch_size": "2", "grpo.group_size": "4", "grpo.epochs": "1", "rollout.max_new_tokens": "64",
    "rollout.new_token_buckets": "[64]", "rollout.seq_buckets": "[384]",
}


class DemoOutputError(ValueError):
    """--out is a folder the demo did not create (non-empty, no marker) or not a folder at all."""


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of `zoomiqa demo`."""
    p = argparse.ArgumentParser(prog="zoomiqa demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo): new, empty, or one an "
                   f"earlier demo wrote (it holds {MARKER}); a rerun replaces only the demo's own outputs")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes for every stage, about a minute and a half on a 2-core CPU (a smoke test of the "
                   "install; the numbers mean nothing): " + ", ".join(f"--{k.replace('_', '-')} {v}"
                                                                      for k, v in QUICK_SIZES.items())
                   + ", and GRPO with 2 images x 4 samples of 64 new tokens")
    p.add_argument("--train-images", type=int, help="synthetic training images (default 384)")
    p.add_argument("--eval-images", type=int, help="held-out images (default 48)")
    p.add_argument("--sft-steps", type=int, help="SFT optimizer steps of 8 examples (default 500)")
    p.add_argument("--grpo-steps", type=int, help="GRPO steps of 4 images x 8 samples; 0 skips GRPO (default 60)")
    p.add_argument("--seed", type=int, default=0, help="seed for data, weights and sampling (default 0)")
    p.add_argument("--max-new-tokens", type=int, help="new tokens per eval round (default 256)")
    p.add_argument("--batch-size", type=int, help="images per sampler call in the eval (default 16)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return p


def prepare_out(out: Path) -> None:
    """Take `out` for the demo: create it (or adopt it when empty) and write the marker; in a folder that carries
    the marker, remove the previous run's outputs (DEMO_DIRS, DEMO_FILES) and nothing else. A non-empty folder
    without the marker raises DemoOutputError before anything is deleted or written."""
    if out.exists() and not out.is_dir():
        raise DemoOutputError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise DemoOutputError(
            f"--out {out}: the folder is not empty and was not created by zoomiqa demo (no {MARKER} in it); "
            "nothing was changed. Pass a new or empty folder, or move its contents away.")
    out.mkdir(parents=True, exist_ok=True)
    for name in DEMO_DIRS:
        if (out / name).is_dir() and not (out / name).is_symlink():
            shutil.rmtree(out / name)
        elif (out / name).is_symlink():
            (out / name).unlink()  # the link only, never what it points at
    for name in DEMO_FILES:
        if (out / name).is_file() or (out / name).is_symlink():
            (out / name).unlink()
    (out / MARKER).write_text("This folder was created by `zoomiqa demo`; a rerun replaces the demo's outputs in "
                              "it: " + ", ".join([f"{d}/" for d in DEMO_DIRS] + list(DEMO_FILES)) + ".\n")


def _argv(overrides: dict[str, str]) -> list[str]:
    return [f"{k}={v}" for k, v in overrides.items()]


def make_data(out: Path, train_images: int, eval_images: int, seed: int, progress: bool = False) -> tuple[Path, Path]:
    """Training trajectories and held-out labels; returns (trajectories.jsonl, heldout labels.jsonl)."""
    from zoomiqa_jax.data.degrade import generate_degradation_set
    from zoomiqa_jax.data.synthetic import write_scenes
    from zoomiqa_jax.data.trajectories import DEMO_KINDS, build_demo_set

    report = build_demo_set(out / "data", train_images, seed=seed, image_size=IMAGE_SIZE, style="compact",
                            kinds=DEMO_KINDS, progress=progress, local_fraction=LOCAL_FRACTION)
    write_scenes(out / "heldout" / "scenes", eval_images, seed=seed + 10_000, light=True)
    generate_degradation_set(out / "heldout" / "scenes", out / "heldout" / "images", seed + 10_000,
                             resize_short=IMAGE_SIZE, progress=progress, kinds=DEMO_KINDS,
                             local_fraction=LOCAL_FRACTION)
    return Path(report.path), out / "heldout" / "images" / "labels.jsonl"


def make_random_checkpoint(out_dir: Path, seed: int) -> Path:
    """A random `ModelConfig.tiny()` model written as an HF directory with the tiny tokenizer."""
    from flax import nnx

    from zoomiqa_jax.checkpoint.hf import save_hf
    from zoomiqa_jax.config import ModelConfig
    from zoomiqa_jax.model import Qwen25VL
    from zoomiqa_jax.processing.tokenizer import TINY_TOKENIZER_DIR

    model = Qwen25VL(ModelConfig.tiny(), rngs=nnx.Rngs(seed))
    return save_hf(model, out_dir, tokenizer_dir=TINY_TOKENIZER_DIR, overwrite=True)


def evaluate(checkpoint: Path, labels: Path, out: Path, *, max_new_tokens: int, batch_size: int, seed: int,
             progress: bool) -> dict[str, Any]:
    """`zoomiqa eval` (Zoom-IQA protocol, greedy, the demo prompts) on the held-out set; its metrics, with the
    zoom metrics (`eval.zoom_metrics`) under "zoom"."""
    from zoomiqa_jax.eval.runner import eval_main
    from zoomiqa_jax.eval.zoom_metrics import zoom_metrics_files

    argv = ["--checkpoint", str(checkpoint), "--labels", str(labels), "--label-format", "plain", "--out", str(out),
            "--prompt", "zoomiqa", "--prompt-file", str(DEMO_PROMPTS), "--max-turns", "2",
            "--max-new-tokens", str(max_new_tokens), "--temperature", "0", "--seed", str(seed),
            "--dtype", "float32", "--batch-size", str(batch_size), "--max-pixels", str(MAX_PIXELS)]
    if not progress:
        argv.append("--no-progress")
    errors = io.StringIO()
    if eval_main(argv, out=io.StringIO(), err=errors, progress_label="held-out eval") != 0:
        raise RuntimeError(f"zoomiqa demo: the eval into {out} failed: {errors.getvalue().strip()}")
    metrics = json.loads((out / "metrics.json").read_text())["datasets"]
    return next(iter(metrics.values())) | {"zoom": zoom_metrics_files(out, labels)}


def readout_srcc(checkpoint: Path, labels: Path, seed: int, progress: bool = False) -> dict[str, Any]:
    """The digit read-out (`inference.readout`: expected rating over the tokens "1".."5" right after the answer
    is opened) on the held-out set: it scores every image even when the model writes no valid answer, so it
    shows where an untrained model stands."""
    import numpy as np

    from zoomiqa_jax.checkpoint.hf import load_hf
    from zoomiqa_jax.data.labels import load_labels
    from zoomiqa_jax.eval.metrics import score_metrics
    from zoomiqa_jax.inference.readout import expected_ratings
    from zoomiqa_jax.processing.prompts import choose_question
    from zoomiqa_jax.processing.tokenizer import load_tokenizer

    records = load_labels(labels, fmt="plain").records
    model, _ = load_hf(checkpoint)
    preds = expected_ratings(model, load_tokenizer(checkpoint), [r.image for r in records], choose_question(seed),
                             max_pixels=MAX_PIXELS, progress=progress)
    return score_metrics(preds, np.asarray([r.mos for r in records], np.float32)).to_dict()


def heldout_reward(cfg: Any, checkpoint: Path, labels: Path, seed: int, progress: bool = False) -> dict[str, float]:
    """The GRPO reward of `checkpoint` on the held-out images (`train.grpo_loop.sampled_reward`: the GRPO run's
    group size, temperature and reward, a fixed sampling seed), so that the SFT and the GRPO weights are compared
    on the same images and random draws."""
    from zoomiqa_jax.checkpoint.loading import load_checkpoint
    from zoomiqa_jax.data.labels import load_labels
    from zoomiqa_jax.processing.tokenizer import load_tokenizer
    from zoomiqa_jax.train.grpo_loop import sampled_reward

    model, _, meta_dir = load_checkpoint(checkpoint, "float32", "float32")
    records = load_labels(labels, fmt="plain").records
    # the prompts of the GRPO run (its data.prompt_file, the demo prompts, over its rollout.protocol's defaults)
    return sampled_reward(cfg, model, load_tokenizer(meta_dir), records, seed=seed + 7, progress=progress)


def _row(stage: str, m: dict[str, Any], seconds: float) -> dict[str, Any]:
    s = m["scores"]
    return {"stage": stage, "n": m["n"], "valid": m["n_valid"], "plcc": s.get("plcc"), "srcc": s.get("srcc"),
            "invalid": m["invalid_by_class"], "crop_rate": m.get("crop_rate"), "zoom": m.get("zoom"),
            "seconds": round(seconds, 1)}


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _zoom_table(rows: list[dict[str, Any]]) -> list[str]:
    """The report's zoom section: per stage, crop rates by flaw scope, box IoU and round-1 vs round-2 error."""
    if not any(r.get("zoom") for r in rows):
        return []
    n = rows[0]["zoom"]["n"]
    lines = ["", "## The zoom", "",
             f"Held-out images: {n['local']} with a local flaw (a darkened patch), {n['global']} darkened all over, "
             f"{n['none']} clean. Crop rate: the share whose trajectory cropped. IoU: the round-1 box against the "
             "flaw patch, on cropped local-flaw images. Error: mean |rating - MOS| of the provisional round-1 and "
             "the final round-2 rating, on cropped images where both parse.", "",
             "| stage | crop rate local | global | clean | median IoU (n) | round-1 error | round-2 error (n) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        z = r.get("zoom")
        if not z:
            continue
        rate = z["crop_rate"]
        lines.append(f"| {r['stage']} | {_f(rate['local'])} | {_f(rate['global'])} | {_f(rate['none'])} | "
                     f"{_f(z['iou_median'])} ({z['n_iou']}) | {_f(z['round1_abs_error'])} | "
                     f"{_f(z['round2_abs_error'])} ({z['n_rounds_compared']}) |")
    return lines


def write_report(out: Path, rows: list[dict[str, Any]], grpo_history: list[dict[str, float]],
                 total_s: float, readout: dict[str, Any] | None = None,
                 sampled: dict[str, dict[str, float]] | None = None, temperature: float = 1.0,
                 quick: bool = False) -> Path:
    lines = ["# zoomiqa demo", ""]
    if quick:
        lines += ["A `--quick` run: every stage with tiny sizes, to check that the install works; the numbers below "
                  "mean nothing.", ""]
    lines += [f"Held-out set: {rows[0]['n']} synthetic degraded images the training never saw. Zoom-IQA protocol, "
              "greedy, up to two rounds; an answer that does not parse counts as invalid and is left out of the "
              "correlations (n/a when fewer than 3 are valid).", "",
              "| stage | valid format | PLCC | SRCC | crop rate | invalid by class | stage time (s) |",
              "| --- | ---: | ---: | ---: | ---: | --- | ---: |"]
    for r in rows:
        invalid = ", ".join(f"{k} {v}" for k, v in r["invalid"].items()) or "none"
        crop = "n/a" if r["crop_rate"] is None else f"{r['crop_rate']:.2f}"
        lines.append(f"| {r['stage']} | {r['valid']}/{r['n']} | {_f(r['plcc'])} | {_f(r['srcc'])} | {crop} | "
                     f"{invalid} | {r['seconds']} |")
    lines += _zoom_table(rows)
    if readout is not None:
        lines += ["", "A random model writes no valid answer, so its protocol correlations are n/a. Where it stands "
                  "is shown by the digit read-out (expected rating over the tokens \"1\"..\"5\" right after "
                  f"`<answer>{{\"rating\": `, one forward per image): SRCC {_f(readout.get('srcc'))}, PLCC "
                  f"{_f(readout.get('plcc'))}. That is no learned skill: darkening alone shifts an untrained network's "
                  "digit probabilities."]
    if sampled:
        n = int(next(iter(sampled.values()))["n"])
        lines += ["", "## Held-out GRPO reward", "",
                  f"The GRPO reward (supp. Eq. 6) on the held-out images: {n} trajectories sampled as in training "
                  f"(temperature {temperature:g}, a group per image, the rank reward within chunks of the training "
                  "batch size), with the same images and the same random seed for both checkpoints. The reward "
                  "logged at each training step below is noisier: every step draws other images, and the later "
                  "re-sampling stage changes which.", "",
                  "| weights | reward | format | score | rank | rating parsed |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for name, r in sampled.items():
            lines.append(f"| {name} | {r['reward/total']:.3f} | {r['reward/format']:.3f} | {r['reward/score']:.3f} | "
                         f"{r['reward/rank']:.3f} | {r['rating/valid_rate']:.3f} |")
    if grpo_history:
        k = max(1, min(10, len(grpo_history) // 3))
        first = sum(h["reward/total"] for h in grpo_history[:k]) / k
        last = sum(h["reward/total"] for h in grpo_history[-k:]) / k
        lines += ["", "## GRPO steps", "",
                  f"Training reward, mean of the first {k} steps {first:.3f}, of the last {k} steps {last:.3f} "
                  "(different images at every step; the held-out table above is the controlled comparison).", "",
                  "| step | reward | format | score | rank | crop rate | KL-Cov active | unique ratings |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for i, h in enumerate(grpo_history, start=1):
            lines.append(f"| {i} | {h['reward/total']:.3f} | {h['reward/format']:.2f} | {h['reward/score']:.3f} | "
                         f"{h['reward/rank']:.3f} | {h['rollout/crop_rate']:.2f} | "
                         f"{h['klcov/active_updates']:.2f} | {h['rating/unique_ratio']:.2f} |")
    lines += ["", f"Total time: {total_s:.0f} s. Runs: sft/, grpo/ (metrics.jsonl, TensorBoard events, "
              "checkpoints, final HF weights); eval reports: eval/<stage>/report.md.", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def run_demo(out: Path, *, train_images: int = 256, eval_images: int = 48, sft_steps: int = 500,
             grpo_steps: int = 60, seed: int = 0, max_new_tokens: int = 256, batch_size: int = 16,
             progress: bool = True, quick: bool = False) -> dict[str, Any]:
    """The whole demo (module docstring); returns the summary also written to summary.json. `quick` adds
    QUICK_SFT_OVERRIDES and QUICK_GRPO_OVERRIDES to the runs' settings (the sizes are the arguments). Raises
    DemoOutputError, before anything is written, when `out` is not the demo's (`prepare_out`)."""
    t0 = time.perf_counter()
    prepare_out(out)
    from zoomiqa_jax.train.config import load_train_config
    from zoomiqa_jax.train.grpo_config import load_grpo_config
    from zoomiqa_jax.train.grpo_loop import run_grpo
    from zoomiqa_jax.train.sft_loop import run_sft

    n_stages = 6 if grpo_steps else 4
    print(f"[1/{n_stages}] synthetic data: {train_images} training images with trajectories, {eval_images} held out",
          flush=True)
    trajectories, heldout = make_data(out, train_images, eval_images, seed, progress)
    eval_kw = dict(max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed, progress=progress)

    print(f"[2/{n_stages}] tiny random Qwen2.5-VL -> HF checkpoint; held-out eval", flush=True)
    t = time.perf_counter()
    init = make_random_checkpoint(out / "init", seed)
    rows = [_row("random init", evaluate(init, heldout, out / "eval" / "init", **eval_kw), time.perf_counter() - t)]
    readout = readout_srcc(init, heldout, seed, progress)

    print(f"[3/{n_stages}] SFT: {sft_steps} steps", flush=True)
    t = time.perf_counter()
    sft_cfg = load_train_config(None, _argv({
        **SFT_OVERRIDES, **(QUICK_SFT_OVERRIDES if quick else {}), "data.train": str(trajectories),
        "data.prompt_file": str(DEMO_PROMPTS),
        "run.steps": str(sft_steps), "run.seed": str(seed), "data.seed": str(seed), "run.out_dir": str(out / "sft")}))
    sft = run_sft(sft_cfg, progress=progress)
    t_sft = time.perf_counter() - t
    print(f"[4/{n_stages}] held-out eval after SFT", flush=True)
    t = time.perf_counter()
    rows.append(_row("SFT", evaluate(sft.final_hf, heldout, out / "eval" / "sft", **eval_kw),
                     t_sft + time.perf_counter() - t))

    history: list[dict[str, float]] = []
    sampled: dict[str, dict[str, float]] = {}
    temperature = 1.0
    if grpo_steps:
        grpo_cfg = load_grpo_config(None, _argv({
            **GRPO_OVERRIDES, **(QUICK_GRPO_OVERRIDES if quick else {}), "model.config": "tiny",
            "model.weights": str(sft.final_hf),
            "data.prompt_file": str(DEMO_PROMPTS), "grpo.datasets": f"[{out / 'data' / 'degraded' / 'labels.jsonl'}]",
            "grpo.label_format": "plain", "run.steps": str(grpo_steps), "run.seed": str(seed),
            "data.seed": str(seed), "run.out_dir": str(out / "grpo")}))
        temperature = grpo_cfg.rollout.temperature
        print(f"[5/{n_stages}] held-out GRPO reward of the SFT weights; GRPO from them: {grpo_steps} steps",
              flush=True)
        t = time.perf_counter()
        sampled["SFT"] = heldout_reward(grpo_cfg, sft.final_hf, heldout, seed, progress)
        grpo = run_grpo(grpo_cfg, progress=progress)
        history = grpo.history
        t_grpo = time.perf_counter() - t
        print(f"[6/{n_stages}] held-out eval and GRPO reward after GRPO", flush=True)
        t = time.perf_counter()
        rows.append(_row("SFT + GRPO", evaluate(grpo.final_hf, heldout, out / "eval" / "grpo", **eval_kw),
                         t_grpo + time.perf_counter() - t))
        sampled["SFT + GRPO"] = heldout_reward(grpo_cfg, grpo.final_hf, heldout, seed, progress)

    total = time.perf_counter() - t0
    report = write_report(out, rows, history, total, readout, sampled, temperature=temperature, quick=quick)
    summary = {"stages": rows, "random_init_readout": readout, "heldout_reward": sampled, "grpo_history": history,
               "seconds": round(total, 1), "report": str(report)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags, with each size flag not given taken from QUICK_SIZES under --quick, else SIZE_DEFAULTS."""
    args = build_parser().parse_args(argv)
    for name in SIZE_DEFAULTS:
        if getattr(args, name) is None:
            setattr(args, name, (QUICK_SIZES if args.quick else SIZE_DEFAULTS)[name])
    return args


def main(argv: list[str] | None = None) -> int:
    """`zoomiqa demo`; returns the exit status (2 for a bad flag or an --out folder that is not the demo's)."""
    args = parse_args(argv)
    if min(args.train_images, args.eval_images, args.max_new_tokens, args.batch_size) < 1 or args.sft_steps < 1 \
            or args.grpo_steps < 0:
        print("error: image counts, --sft-steps, --max-new-tokens and --batch-size must be >= 1, --grpo-steps >= 0",
              file=sys.stderr)
        return 2
    try:
        summary = run_demo(Path(args.out), train_images=args.train_images, eval_images=args.eval_images,
                           sft_steps=args.sft_steps, grpo_steps=args.grpo_steps, seed=args.seed,
                           max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                           progress=not args.no_progress, quick=args.quick)
    except DemoOutputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"\nheld-out set, {summary['stages'][0]['n']} images ({summary['seconds']} s in all):")
    r = summary["random_init_readout"]
    print(f"  random init: digit read-out SRCC {_f(r.get('srcc'))} (untrained; it writes no valid answer)")
    for r in summary["stages"]:
        print(f"  {r['stage']:<12} valid format {r['valid']}/{r['n']}, PLCC {_f(r['plcc'])}, SRCC {_f(r['srcc'])}")
        z = r.get("zoom")
        if z:
            rate = z["crop_rate"]
            print(f"  {'':<12} crop rate local {_f(rate['local'])} / global {_f(rate['global'])} / clean "
                  f"{_f(rate['none'])}, median IoU {_f(z['iou_median'])}, rating error round 1 "
                  f"{_f(z['round1_abs_error'])} -> round 2 {_f(z['round2_abs_error'])}")
    sampled = summary["heldout_reward"]
    if sampled:
        before, after = sampled["SFT"]["reward/total"], sampled["SFT + GRPO"]["reward/total"]
        print(f"  held-out GRPO reward (same samples' seed): SFT {before:.3f} -> SFT + GRPO {after:.3f}")
    print(f"report: {summary['report']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
