"""`zoomiqa train grpo`: the GRPO run (Zoom-IQA stage 2, arXiv:2601.02918 Sec. 3.2; Q-Insight; VisualQuality-R1).

    result = run_grpo(load_grpo_config("configs/zoomiqa_grpo.yaml", ["model.weights=runs/sft/final"]))

One GRPO step (`grpo_config` says how the sizes relate):

1. the image resampler (`data.resampling.ProgressiveSampler`) draws `data.batch_size` images of ONE dataset,
   with the Progressive Re-sampling stage weights of this step;
2. rollouts with the CURRENT parameters through the inference code the evaluation uses: G = `grpo.group_size`
   samples per image at temperature `rollout.temperature` (1.0), the stage-1 prompt prefilled once per image
   and sampled G times (`train.rollout.group_stage1_generate`); Zoom-IQA rollouts go on to the crop round
   wherever stage 1 asked for a crop (`inference.tasks.run_task`, as score and eval run it); log-probs are
   recorded at sampling time;
3. rewards from the recipe's parsers (`train.rewards`, `train.rewards_qinsight`), group-normalized advantages
   (R - mean) / (unbiased std + 1e-4) (`train.advantages`);
4. the rollout batch (`train.rollout.build_rollout_batch`): one row per ROUND, each round's prompt as it was
   sampled and its reply (so a crop decision is trained where it was made, with the stage-1 image), loss mask on
   generated tokens only, the rating tokens as KL-Coverage candidates, the sequence mean taken per trajectory;
   rows padded to one of a few counts (`train.rollout.row_bucket`) so the step compiles a few shapes;
5. `grpo.epochs` passes over `grpo.mini_batches` mini-batches, one optimizer micro-step each. The first
   micro-step uses the current forward as pi_old (ratio 1, KL-Coverage exactly 0); the later ones use pi_old's
   log-probs and candidate logits computed before the first update (`train.grpo.make_old_policy`). With a
   `grpo.ref_kl_beta`, the frozen start policy's log-probs enter as `ref_logp` (k3 KL).

Determinism and resume: the images of step k are a pure function of (data.seed, k) (the sampler), the sampling
keys of (run.seed, k), so a run resumed from a checkpoint (params, optimizer state, step, sampler state) takes
exactly the steps an uninterrupted run takes; tests/train/test_grpo_resume.py kills one with SIGKILL.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from zoomiqa_jax.parallel.mesh import initialize_distributed, make_mesh
from zoomiqa_jax.parallel.rules import state_shardings
from zoomiqa_jax.train.config import resolve_path
from zoomiqa_jax.train.grpo_config import GrpoTrainConfig
from zoomiqa_jax.train.preemption import StopRequest
from zoomiqa_jax.train.sft_loop import export_final, load_model, synthetic_data, to_global, tokenizer_dir

# rollout-batch keys the step ignores
HOST_ONLY = ("sample_logp", "image_grid_thw", "image_counts", "patch_mask", "row_trajectory")
RECIPE_TASK = {"qinsight": "qinsight_score", "visualquality_r1": "vqr1_score"}


# ------------------------------------------------------------------------------------------ data
@dataclasses.dataclass
class Dataset:
    """One dataset's labelled images (ranks are compared within it only)."""

    name: str
    records: list[Any]  # zoomiqa_jax.data.labels.LabelRecord

    @property
    def mos(self) -> list[float]:
        return [r.mos for r in self.records]


def load_datasets(cfg: GrpoTrainConfig, out: Path, log: Callable[[str], None]) -> list[Dataset]:
    """The label files of `grpo.datasets` grouped by dataset name, or the synthetic demo set. Bad records
    (missing or undecodable images, scores outside [1, 5], malformed lines) are skipped and named in the log and
    metrics.jsonl; more than `data.max_bad_fraction` of them stops the run (`train.data_checks`)."""
    from zoomiqa_jax.train.data_checks import load_checked_labels

    paths = list(cfg.grpo.datasets)
    fmt = cfg.grpo.label_format
    if not paths:
        paths = [synthetic_labels(cfg, out / "data")]
        fmt = "plain"
    records, bad = load_checked_labels(paths, fmt, root=cfg.data.image_root or None, cache_dir=out, log=log)
    bad.finish(log, out, cfg.data.max_bad_fraction)
    by_name: dict[str, list[Any]] = {}
    for record in records:
        by_name.setdefault(record.dataset, []).append(record)
    return [Dataset(name, records) for name, records in sorted(by_name.items())]


def synthetic_labels(cfg: GrpoTrainConfig, out: Path) -> Path:
    """The labels of the demo's synthetic degraded set: the images `train.sft_loop.synthetic_data` makes (the same
    seed, size and kinds as the SFT stage's), made once."""
    synthetic_data(cfg, out)
    return out / "degraded" / "labels.jsonl"


class ImageCache:
    """Original images by path, loaded on first use (RGB, EXIF-rotated, as inference loads them)."""

    def __init__(self, limit: int = 4096) -> None:
        self._images: dict[str, Any] = {}
        self._limit = limit

    def __call__(self, path: Path) -> Any:
        from zoomiqa_jax.processing.image import load_image

        key = str(path)
        if key not in self._images:
            if len(self._images) >= self._limit:
                self._images.pop(next(iter(self._images)))
            self._images[key] = load_image(path)
        return self._images[key]


# ------------------------------------------------------------------------------------------ rewards
def _nan(x: float | None) -> float:
    return float("nan") if x is None else float(x)


def compute_rewards(cfg: GrpoTrainConfig, trajs: Sequence[Any], records: Sequence[Any], tasks: Sequence[str],
                    group: int) -> dict[str, np.ndarray]:
    """Reward components [batch, group] for the recipe; `total` is what the advantages use."""
    from zoomiqa_jax.train.rewards import thurstone_rank_reward, visualquality_r1_format_reward, zoomiqa_rewards
    from zoomiqa_jax.train.rewards_qinsight import qinsight_rewards

    g = cfg.grpo
    b = len(records)
    grid = [list(trajs[i * group:(i + 1) * group]) for i in range(b)]
    mos = np.asarray([r.mos for r in records], np.float64)
    rating = np.asarray([[_nan(t.rating) for t in row] for row in grid], np.float64)
    if g.recipe == "zoomiqa":
        protocol = zoomiqa_protocol(cfg)  # the parser `zoomiqa eval --protocol` counts validity with
        fmt = np.asarray([[bool(t.rounds) and protocol.format_ok([r.output_text for r in t.rounds])
                           for t in row] for row in grid])
        parts = zoomiqa_rewards(fmt, rating, mos, alpha=g.reward_alpha, beta=g.reward_beta, sigma=g.score_sigma)
        return {"total": parts.total, "format": parts.format, "score": parts.score, "rank": parts.rank,
                "rating": rating}
    texts = [[t.rounds[-1].output_text if t.rounds else "" for t in row] for row in grid]
    if g.recipe == "qinsight":
        solutions = [r.mos if task == "score" else {"distortion_class": r.distortion_class or "null",
                                                    "severity": r.severity or "null"}
                     for r, task in zip(records, tasks)]
        parts = qinsight_rewards(texts, tasks, solutions, threshold=g.score_threshold)
        return {"total": parts.total, "format": parts.format, "task": parts.task, "rating": rating}
    fmt = np.asarray([[visualquality_r1_format_reward(t) for t in row] for row in texts])
    rank = thurstone_rank_reward(rating, mos)
    return {"total": fmt + rank, "format": fmt, "rank": rank, "rating": rating}


# ------------------------------------------------------------------------------------------ the run
@dataclasses.dataclass
class GrpoResult:
    step: int
    out_dir: Path
    final_hf: Path | None
    history: list[dict[str, float]]
    resumed_from: int | None
    params: Any = None
    stopped: str = ""  # the signal that stopped the run early ("SIGTERM"), with a checkpoint at `step`; "" if none


def vision_mask(params: Any) -> Any:
    """True on the vision tower's parameters (everything under `visual`)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: any(getattr(k, "key", getattr(k, "name", None)) == "visual" for k in path), params)


def run_grpo(cfg: GrpoTrainConfig, *, progress: bool = True, log: Callable[[str], None] | None = None,
             stop: StopRequest | None = None, allow_config_change: bool = False) -> GrpoResult:
    """Train as configured (module docstring); resumes from the latest checkpoint in the checkpoint directory
    after checking that its saved config matches (`train.resume`; `allow_config_change` lets changes through).
    With `stop` (entered), a SIGINT / SIGTERM ends the run after the current GRPO step with a checkpoint
    (`train.preemption`); the result's `stopped` names the signal."""
    from zoomiqa_jax.data.resampling import ProgressiveSampler, ResampleStage
    from zoomiqa_jax.processing.prompts import choose_question
    from zoomiqa_jax.processing.tokenizer import load_tokenizer
    from zoomiqa_jax.train.advantages import group_advantages
    from zoomiqa_jax.train.checkpointing import TrainCheckpointer, abstract_like, write_model_metadata
    from zoomiqa_jax.train.config import save_train_config
    from zoomiqa_jax.train.grpo import OLD_KEYS, make_grpo_step, make_old_policy, policy_outputs
    from zoomiqa_jax.train.metrics_log import MetricsLogger, progress_bar, show_metrics
    from zoomiqa_jax.train.optim import check_nonfinite_budget, make_optimizer, nonfinite_count, optimizer_step
    from zoomiqa_jax.train.resume import check_resume_config
    from zoomiqa_jax.train.rollout import (
        build_rollout_batch,
        rollout_metrics,
        round_rows,
        row_bucket,
        trajectory_problem,
    )
    from zoomiqa_jax.train.step import batch_shardings, batch_ways
    from zoomiqa_jax.train.validate import validate_parallelism

    log = log or functools.partial(print, flush=True)
    initialize_distributed()
    validate_parallelism(cfg, jax.device_count())  # a batch or mesh that does not shard stops here (exit 2)
    g, ro = cfg.grpo, cfg.rollout
    out = Path(cfg.run.out_dir)
    check_resume_config(cfg, allow_change=allow_config_change, log=log)  # before the model loads
    out.mkdir(parents=True, exist_ok=True)
    datasets = load_datasets(cfg, out, log)  # before the model loads: bad data stops the run at once
    mesh = make_mesh(cfg.parallel.mesh)
    model, config, weights_dir = load_model(cfg)
    tok_dir = tokenizer_dir(cfg, weights_dir)
    tokenizer = load_tokenizer(tok_dir)
    prompts = rollout_prompts(cfg)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else config.bos_token_id

    n_images = sum(len(d.records) for d in datasets)
    total = cfg.run.steps or max(1, int(np.ceil(cfg.run.epochs * n_images / cfg.data.batch_size)))
    stages = tuple(ResampleStage(s, p) for s, p in zip(g.resample_starts, g.resample_powers))
    sampler = ProgressiveSampler({d.name: d.mos for d in datasets}, cfg.data.batch_size, total, stages=stages,
                                 bins=g.resample_bins, seed=cfg.data.seed)
    images = ImageCache()
    micro_per_step = g.epochs * g.mini_batches
    total_updates = max(1, total * micro_per_step // cfg.optim.grad_accum)
    graphdef, params = nnx.split(model, nnx.Param)
    tx, schedule = make_optimizer(cfg.optim, total_updates, frozen=None if g.train_vision else vision_mask)
    p_shard = state_shardings(params, mesh)
    params = jax.device_put(params, p_shard)
    ref_params = jax.tree.map(jnp.copy, params) if g.ref_kl_beta > 0 else None
    del model
    loss_cfg = dataclasses.replace(g.loss_config(), temperature=ro.temperature)

    compiled: dict[tuple, Any] = {}

    def step_fn(batch: dict, first: bool) -> tuple[Callable, dict]:
        key = ("step", first, _shape_key(batch))
        if key not in compiled:
            init, fn = make_grpo_step(graphdef, params, tx, loss_cfg, mesh=mesh, batch_example=batch)
            compiled[key] = (init, fn, batch_shardings(batch, mesh))
        return compiled[key]

    def old_fn(batch: dict) -> Callable:
        key = ("old", _shape_key(batch))
        if key not in compiled:
            compiled[key] = make_old_policy(graphdef, params, mesh=mesh, batch_example=batch,
                                            temperature=ro.temperature)
        return compiled[key]

    ways = batch_ways(mesh)  # the rollout rows split over the rules' batch axes
    ref_logp_fn = jax.jit(lambda p, b: policy_outputs(nnx.merge(graphdef, p), b, ro.temperature)[0])

    opt_state = jax.jit(tx.init)(params)
    ckpt = TrainCheckpointer.from_config(cfg, log=log)
    step = 0
    resumed_from = ckpt.latest_step()
    if resumed_from is not None:
        restored = ckpt.restore(params=abstract_like(params, p_shard), opt_state=abstract_like(opt_state))
        params, opt_state = restored.params, restored.opt_state
        step = int(restored.data_state["step"])
        sampler.load_state_dict(restored.data_state["sampler"])
        log(f"resumed from {ckpt.directory / str(restored.step)} (GRPO step {step})")
    else:
        write_model_metadata(ckpt.directory, config, tokenizer_dir=tok_dir)
    if jax.process_index() == 0:
        save_train_config(cfg, out / "config.yaml")
    log(f"GRPO ({g.recipe}): {len(datasets)} dataset(s), {n_images} images; {total} steps of "
        f"{cfg.data.batch_size} images x {g.group_size} samples; {micro_per_step} micro-step(s) per step; "
        f"mesh {dict(mesh.shape)}; out {out}")

    seq_buckets = tuple(ro.seq_buckets) or tuple(sorted({*ro.prompt_buckets,
                                                         *(a + b for a in ro.prompt_buckets
                                                           for b in ro.new_token_buckets)}))
    logger = MetricsLogger(out)
    if step < total:
        log("compiling the first GRPO step (takes minutes on CPU)...")
    bar = progress_bar(total, initial=step, desc="grpo", enabled=progress and jax.process_index() == 0)
    history: list[dict[str, float]] = []
    stopped = ""

    def save_checkpoint(force: bool) -> None:  # the same state on a schedule and on a stop signal
        ckpt.save(step, params=params, opt_state=opt_state, config=cfg, force=force,
                  data_state={"step": step, "sampler": dict(sampler.state_dict(), next_step=step)})

    try:
        while step < total:
            if stop is not None and stop.agreed():  # every process, at the same step
                save_checkpoint(force=True)
                stopped = stop.signal_name
                log(f"{stopped}: stopping at GRPO step {step}; saving its checkpoint")
                break
            t0 = time.perf_counter()
            draw = sampler.draw(step)
            dataset = next(d for d in datasets if d.name == draw.dataset)
            records = [dataset.records[i] for i in draw.indices]
            tasks = _tasks(cfg, draw.indices)
            questions = [choose_question(_question_seed(cfg.data.seed, draw.dataset, idx), rec.question, prompts)
                         for idx, rec in zip(draw.indices, records)]
            settings = sampling_settings(cfg, (cfg.run.seed * 100_003 + step) % (2**31 - 1))
            items, trajs = sample_groups(cfg, nnx.merge(graphdef, params), tokenizer, records, questions, tasks,
                                         settings, prompts, images)
            t_roll = time.perf_counter() - t0
            rewards = compute_rewards(cfg, trajs, records, tasks, g.group_size)
            adv = np.asarray(group_advantages(rewards["total"])).reshape(-1)
            problems = [trajectory_problem(t, config) for t in trajs]
            dropped = sum(p is not None for p in problems)
            if dropped == len(trajs):
                raise ValueError(f"GRPO step {step}: no trajectory can be trained on, e.g. {problems[0]}")

            per_mb = cfg.data.batch_size // g.mini_batches * g.group_size
            mbs = []
            for m in range(g.mini_batches):
                rows = [i for i in range(m * per_mb, (m + 1) * per_mb) if problems[i] is None]
                if not rows:
                    continue
                longest = max(len(ids) for i in rows for ids, _ in round_rows(trajs[i]))
                if longest > max(seq_buckets):  # a long sample: a larger training shape, never a truncation
                    seq_buckets = (*seq_buckets, -(-longest // 128) * 128)
                    log(f"GRPO step {step}: a {longest}-token rollout exceeds rollout.seq_buckets; training rows "
                        f"of that batch are padded to {seq_buckets[-1]} (one more compiled shape)")
                batch = build_rollout_batch(
                    [trajs[i] for i in rows], [items[i].image for i in rows], adv[rows], tokenizer, config,
                    min_pixels=settings.min_pixels, max_pixels=settings.max_pixels, seq_buckets=seq_buckets,
                    patch_buckets=tuple(ro.patch_buckets), candidate_slots=g.candidate_slots, pad_token_id=pad_id,
                    protocol=zoomiqa_protocol(cfg, prompts),
                    rows=row_bucket(sum(len(trajs[i].rounds) for i in rows), per_mb, ways))
                for key in HOST_ONLY:
                    batch.pop(key, None)
                if ref_params is not None:
                    batch["ref_logp"] = np.asarray(ref_logp_fn(ref_params, jax.tree.map(jnp.asarray, batch)))
                mbs.append(batch)
            olds = []
            if micro_per_step > 1:
                for batch in mbs:
                    olds.append(jax.device_get(old_fn(batch)(params, jax.tree.map(jnp.asarray, batch))))
            step_metrics: list[dict[str, float]] = []
            micro = 0
            for _epoch in range(g.epochs):
                for m, batch in enumerate(mbs):
                    first = micro == 0
                    full = batch if first else {**batch, **dict(zip(OLD_KEYS, (olds[m][k] for k in OLD_KEYS)))}
                    _, fn, shard = step_fn(full, first)
                    params, opt_state, metrics = fn(params, opt_state, to_global(full, shard))
                    step_metrics.append({k: float(v) for k, v in jax.device_get(metrics).items()})
                    micro += 1
            skipped = int(nonfinite_count(opt_state))
            check_nonfinite_budget(skipped, cfg.run.max_nonfinite, step)
            step += 1
            values = _step_values(step_metrics, rewards, rollout_metrics(trajs))
            values["rollout/dropped"] = float(dropped)
            updates = int(optimizer_step(opt_state))
            values.update(lr=float(schedule(max(updates - 1, 0))), updates=updates, nonfinite=skipped,
                          stage=draw.stage, rollout_s=t_roll, step_s=time.perf_counter() - t0)
            history.append(logger.log(step, values))
            show_metrics(bar, {"loss": values["loss"], "lr": values["lr"]}, advance=0)
            bar.set_postfix({"reward": f"{values['reward/total']:.3f}", "fmt": f"{values['reward/format']:.2f}"},
                            refresh=False)
            bar.update(1)
            if ckpt.should_save(step) or step == total:
                save_checkpoint(force=step == total)
        ckpt.wait()
    finally:
        bar.close()
        logger.close()
        ckpt.close()

    final = export_final(graphdef, params, out / "final", tok_dir, log) if cfg.run.export_hf and not stopped else None
    return GrpoResult(step=step, out_dir=out, final_hf=final, history=history, resumed_from=resumed_from,
                      params=params, stopped=stopped)


# ------------------------------------------------------------------------------------------ sampling
def sampling_settings(cfg: GrpoTrainConfig, seed: int) -> Any:
    """The rollout sampling settings of `cfg.rollout` with this seed."""
    from zoomiqa_jax.inference.engine import Buckets
    from zoomiqa_jax.inference.rounds import SamplingSettings

    ro = cfg.rollout
    return SamplingSettings(max_new_tokens=ro.max_new_tokens, temperature=ro.temperature, top_p=ro.top_p,
                            top_k=ro.top_k, seed=seed, max_pixels=cfg.data.max_pixels,
                            buckets=Buckets(prompt_lengths=tuple(ro.prompt_buckets),
                                            new_tokens=tuple(ro.new_token_buckets)))


def zoomiqa_protocol(cfg: GrpoTrainConfig, prompts: Any = None) -> Any:
    """The `inference.protocol.Protocol` of a zoomiqa-recipe run (`rollout.protocol`), None for the single-turn
    recipes, whose rollouts, parsers and image re-render are their own (the processor's plain resize)."""
    from zoomiqa_jax.inference.protocol import Protocol

    if cfg.grpo.recipe != "zoomiqa":
        return None
    return Protocol(cfg.rollout.protocol, prompts) if prompts is not None else Protocol(cfg.rollout.protocol)


def rollout_prompts(cfg: GrpoTrainConfig) -> Any:
    """The prompts of the rollouts: `data.prompt_file` over the defaults of `rollout.protocol` (official: the
    authors' stage-2 labels; `inference.protocol.make_protocol`)."""
    from zoomiqa_jax.inference.protocol import make_protocol

    file = resolve_path(cfg.data.prompt_file) if cfg.data.prompt_file else None
    return make_protocol(cfg.rollout.protocol, file).prompts


def sample_groups(cfg: GrpoTrainConfig, policy: Any, tokenizer: Any, records: Sequence[Any],
                  questions: Sequence[str], tasks: Sequence[str], settings: Any, prompts: Any,
                  images: Callable[[Path], Any] | None = None) -> tuple[list[Any], list[Any]]:
    """`grpo.group_size` rollouts of each record with the recipe's protocol (the stage-1 prompt prefilled once per
    image); returns (items, trajectories), image b's samples at rows b*G .. b*G+G-1."""
    from zoomiqa_jax.inference.rounds import ImageItem
    from zoomiqa_jax.inference.tasks import run_task
    from zoomiqa_jax.train.rollout import group_stage1_generate

    group = cfg.grpo.group_size
    images = images or ImageCache()
    items = [ImageItem(str(rec.image), images(rec.image), b * group + k, question)
             for b, (rec, question) in enumerate(zip(records, questions)) for k in range(group)]
    grouped = group_stage1_generate(group)
    if cfg.grpo.recipe == "zoomiqa":
        trajs = run_task(policy, tokenizer, items, "zoomiqa", settings, max_turns=cfg.rollout.max_turns,
                         stage1_generate_fn=grouped, protocol=zoomiqa_protocol(cfg, prompts))
    else:
        trajs = _single_turn(policy, tokenizer, items, list(tasks), group, settings, prompts, grouped,
                             cfg.grpo.recipe)
    return items, trajs


def sampled_reward(cfg: GrpoTrainConfig, policy: Any, tokenizer: Any, records: Sequence[Any], *, seed: int,
                   prompts: Any = None, progress: bool = False) -> dict[str, float]:
    """The recipe's mean reward on fixed images: `grpo.group_size` samples per image with the rollout settings and
    a fixed seed, rewards computed per chunk of `data.batch_size` images exactly as in a training step. With the
    same images and seed it compares two checkpoints without the step-to-step noise of the training reward
    (whose images change every step). Returns the mean of each reward component, `rating/valid_rate` and
    `n` (trajectories). `progress` shows a bar over the images."""
    from tqdm.auto import tqdm

    from zoomiqa_jax.processing.prompts import choose_question

    prompts = prompts or rollout_prompts(cfg)
    group, size = cfg.grpo.group_size, cfg.data.batch_size
    parts: dict[str, list[np.ndarray]] = {}
    images = ImageCache()
    bar = tqdm(total=len(records), desc="held-out reward", unit="image", dynamic_ncols=True,
               disable=not (progress and jax.process_index() == 0))
    for start in range(0, len(records), size):
        chunk = list(records[start:start + size])
        questions = [choose_question(_question_seed(cfg.data.seed, r.dataset, start + i), r.question, prompts)
                     for i, r in enumerate(chunk)]
        tasks = _tasks(cfg, range(start, start + len(chunk)))
        settings = sampling_settings(cfg, (seed * 100_003 + start) % (2**31 - 1))
        _, trajs = sample_groups(cfg, policy, tokenizer, chunk, questions, tasks, settings, prompts, images)
        for name, arr in compute_rewards(cfg, trajs, chunk, tasks, group).items():
            parts.setdefault(name, []).append(np.asarray(arr, np.float64).reshape(-1))
        bar.update(len(chunk))
    bar.close()
    ratings = np.concatenate(parts.pop("rating"))
    out = {f"reward/{name}": float(np.mean(np.concatenate(arrs))) for name, arrs in parts.items()}
    out["rating/valid_rate"] = float(np.isfinite(ratings).mean())
    out["n"] = float(len(ratings))
    return out


# ------------------------------------------------------------------------------------------ helpers
def _shape_key(batch: dict) -> tuple:
    meta = batch.get("vision_meta")
    return (tuple(sorted((k, np.shape(v)) for k, v in batch.items() if k != "vision_meta")),
            None if meta is None else (np.shape(meta.window_index), meta.full_chunk))


def _question_seed(seed: int, dataset: str, index: int) -> int:
    """A stable per-image seed for the question draw (the same question for every sample of the image)."""
    import zlib

    return zlib.crc32(f"{seed}/{dataset}/{index}".encode())


def _tasks(cfg: GrpoTrainConfig, indices: Sequence[int]) -> list[str]:
    """Q-Insight: "degradation" for a stable `grpo.degradation_fraction` of the images, else "score"."""
    if cfg.grpo.recipe != "qinsight" or cfg.grpo.degradation_fraction <= 0:
        return ["score"] * len(indices)
    import zlib

    cut = cfg.grpo.degradation_fraction * 2**32
    return ["degradation" if zlib.crc32(f"{cfg.data.seed}/task/{i}".encode()) < cut else "score" for i in indices]


def _single_turn(policy: Any, tokenizer: Any, items: list, tasks: list[str], group: int, settings: Any,
                 prompts: Any, grouped: Callable, recipe: str) -> list:
    """Single-turn rollouts (`inference.tasks.run_task`), one engine call per task kind, results back in item
    order."""
    from zoomiqa_jax.inference.tasks import run_task

    names = {"score": RECIPE_TASK[recipe], "degradation": "qinsight_degradation"}
    out: list = [None] * len(items)
    for task in sorted(set(tasks)):
        rows = [i for i, it in enumerate(items) if tasks[it.index // group] == task]
        for i, traj in zip(rows, run_task(policy, tokenizer, [items[i] for i in rows], names[task], settings,
                                          prompts=prompts, generate_fn=grouped)):
            out[i] = traj
    return out


def _step_values(step_metrics: list[dict[str, float]], rewards: dict[str, np.ndarray],
                 rollout: dict[str, float]) -> dict[str, float]:
    """One metrics line: the loss metrics (mean over the step's micro-steps, KL-Coverage activity as the fraction
    of micro-steps where it acted), rewards by component, rollout statistics, unique-score ratio."""
    values: dict[str, float] = {}
    for key in step_metrics[0]:
        values[key] = float(np.mean([m[key] for m in step_metrics]))
    values["klcov/active_updates"] = float(np.mean([m.get("klcov/active", 0.0) > 0 for m in step_metrics]))
    for name, arr in rewards.items():
        if name != "rating":
            values[f"reward/{name}"] = float(np.mean(arr))
    ratings = rewards["rating"][np.isfinite(rewards["rating"])]
    values["rating/valid_rate"] = float(len(ratings) / max(rewards["rating"].size, 1))
    values["rating/unique_ratio"] = float(len(np.unique(np.round(ratings, 2))) / max(len(ratings), 1))
    values["rating/std"] = float(np.std(ratings)) if len(ratings) else 0.0
    values.update({k: float(v) for k, v in rollout.items()})
    return values
