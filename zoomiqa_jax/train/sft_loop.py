"""`zoomiqa train sft`: the supervised fine-tuning run (Zoom-IQA stage 1, arXiv:2601.02918 Sec. 3.1.2).

    result = run_sft(load_train_config("configs/sft_tiny.yaml", ["run.steps=50"]))

One run, end to end:

1. mesh (data, fsdp, tensor) over every device (`parallel.mesh`; `jax.distributed.initialize()` first when the
   environment describes several processes);
2. the model: random init from `run.seed` or the weights of `model.weights` (HF directory or orbax), with the
   `parallel.remat` / `parallel.scan_layers` execution switches; parameters laid out by the logical-axis rules;
3. the data: the trajectory JSONL of `data.train` (or, when it is "", a synthetic set made under
   `<out_dir>/data`), turned into examples (`train.sft_data`) and micro-batches padded to static buckets;
4. AdamW (`train.optim.make_optimizer`), the jitted sharded step (`train.sft.make_sft_step`), one compiled
   program per (sequence bucket, patch bucket);
5. orbax checkpoints every `checkpoint.save_every` steps and at the end, resumed automatically from the latest
   one in the checkpoint directory: parameters, optimizer state, step and the data position;
6. metrics (loss, token accuracy, grad norm, lr, tokens/s, MFU where the peak is known) to
   `<out_dir>/metrics.jsonl` and TensorBoard events, a progress bar; at the end the weights as an HF
   checkpoint in `<out_dir>/final` (`run.export_hf`).

Deterministic data: micro-batch k holds the examples at positions k*B .. k*B+B-1 of an endless stream made of
one seeded permutation per epoch (`np.random.default_rng([data.seed, epoch])`), so the data position is one
integer. Resuming from a checkpoint therefore replays exactly the batches an uninterrupted run would have seen,
and the final parameters are bit-identical (tests/train/test_sft_resume.py kills a run with SIGKILL to show it).

Non-finite losses: the optimizer skips the micro-step (`train.optim.skip_nonfinite`), the count is logged as
`nonfinite`, and the run stops with NonFiniteBudgetError once it exceeds `run.max_nonfinite`.

Multi-host: every process builds the same global micro-batch (the data is a pure function of the position) and
hands jax only the shards its devices hold (`jax.make_array_from_callback`); only process 0 writes logs.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from zoomiqa_jax.config import ModelConfig
from zoomiqa_jax.model import Qwen25VL
from zoomiqa_jax.parallel.mesh import initialize_distributed, make_mesh
from zoomiqa_jax.parallel.rules import state_shardings
from zoomiqa_jax.train.config import TrainConfig, resolve_path, save_train_config
from zoomiqa_jax.train.preemption import StopRequest
from zoomiqa_jax.train.sft_data import (
    SequenceTooLongError,
    SFTBuckets,
    SFTExample,
    SFTRecord,
    add_model_inputs,
    build_examples,
    collate,
    load_checked_sft,
)

MODEL_KEYS = ("input_ids", "attention_mask", "labels", "pixel_values", "position_ids", "vision_meta")
PATCH_BUCKETS = (256, 512, 1024, 2048, 4096, 8192, 16384, 32768)


# ------------------------------------------------------------------------------------------ model + tokenizer
def load_model(cfg: TrainConfig) -> tuple[Qwen25VL, ModelConfig, Path | None]:
    """The model of `cfg.model` (random from run.seed, or an HF / orbax checkpoint read by
    `checkpoint.loading.load_checkpoint`), with the parallel.* execution switches, and the directory holding the
    checkpoint's config.json and tokenizer (None for a random init)."""
    from zoomiqa_jax.checkpoint.loading import CheckpointError, load_checkpoint

    dtype, param_dtype = jnp.dtype(cfg.model.dtype), jnp.dtype(cfg.model.param_dtype)
    if not cfg.model.weights:
        config = cfg.model.resolve()
        model = Qwen25VL(config, rngs=nnx.Rngs(cfg.run.seed), dtype=dtype, param_dtype=param_dtype)
        meta_dir = None
    else:
        try:
            model, config, meta_dir = load_checkpoint(cfg.model.weights, dtype, param_dtype)
        except CheckpointError as err:
            raise CheckpointError(f"model.weights: {err}") from None
    model.set_execution(remat=cfg.parallel.remat, scan_layers=cfg.parallel.scan_layers)
    return model, config, meta_dir


def tokenizer_dir(cfg: TrainConfig, weights_dir: Path | None) -> Path:
    """model.tokenizer, else the weights' directory, else the built-in tiny tokenizer for the tiny preset."""
    from zoomiqa_jax.processing.tokenizer import TINY_TOKENIZER_DIR

    if cfg.model.tokenizer:
        return Path(cfg.model.tokenizer)
    if weights_dir is not None and (weights_dir / "tokenizer.json").exists():
        return weights_dir
    if cfg.model.config == "tiny":
        return Path(TINY_TOKENIZER_DIR)
    raise ValueError("model.tokenizer: no tokenizer found; set model.tokenizer to a directory holding "
                     "tokenizer.json (the weights' directory has none)")


# ------------------------------------------------------------------------------------------ data
class SFTStream:
    """Deterministic micro-batches over the examples of `records` (module docstring, "Deterministic data").

    An example is (record, part): one part per record, or one per round with `per_round`. Examples are built on
    demand (image loading, crop, tokenization) and kept in a bounded cache.

    With `seq_buckets` given, batches are grouped by length (as HF's `group_by_length`): each epoch's
    permutation is split by the sequence bucket each example pads to, every bucket's list is cut into batches
    (the last one topped up from the start of the same list), and the batches are shuffled. A batch then never
    pads a short example to a long bucket. Every epoch has the same number of batches, so micro-batch k is
    still a pure function of k."""

    def __init__(self, records: Sequence[SFTRecord], tokenizer: Any, *, batch_size: int, seed: int,
                 per_round: bool, prompts: Any, max_pixels: int, seq_buckets: Sequence[int] | None = None,
                 cache_size: int = 4096, log: Callable[[str], None] | None = None) -> None:
        if not records:
            raise ValueError("SFT data: no usable records")
        self.records = list(records)
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.seed = seed
        self.per_round = per_round
        self.prompts = prompts
        self.max_pixels = max_pixels
        self.index = [(i, part) for i, r in enumerate(self.records)
                      for part in range(2 if (per_round and r.crops) else 1)]
        self._cache: OrderedDict[int, SFTExample] = OrderedDict()
        self._cache_size = cache_size
        self._epoch_batches: dict[int, list[list[int]]] = {}
        self.bucket_of: np.ndarray | None = None
        if seq_buckets:
            if log is not None:
                log(f"measuring {len(self.index)} examples to group batches by length")
            lengths = np.asarray([len(self.example(i).input_ids) for i in range(len(self.index))])
            edges = np.asarray(sorted(seq_buckets))
            too_long = np.flatnonzero(lengths > edges[-1])
            if len(too_long):
                i = int(too_long[0])
                raise SequenceTooLongError(
                    f"{len(too_long)} example(s) exceed the largest sequence bucket {edges[-1]}, e.g. "
                    f"{self.records[self.index[i][0]].where} ({lengths[i]} tokens); add a larger bucket to "
                    "data.seq_buckets (sequences are never truncated)")
            self.bucket_of = np.searchsorted(edges, lengths)
        self.batches_per_epoch = len(self._batches(0))

    def __len__(self) -> int:
        return len(self.index)

    def _batches(self, epoch: int) -> list[list[int]]:
        if epoch in self._epoch_batches:
            return self._epoch_batches[epoch]
        n, b = len(self.index), self.batch_size
        perm = np.random.default_rng([self.seed, epoch]).permutation(n)
        if self.bucket_of is None:
            stream = np.concatenate([perm, perm[: (-n) % b]]) if n % b else perm
            batches = [stream[i:i + b].tolist() for i in range(0, len(stream), b)]
        else:
            batches = []
            for bucket in np.unique(self.bucket_of):
                members = perm[self.bucket_of[perm] == bucket]
                padded = np.resize(members, -(-len(members) // b) * b)  # tops up from the start of the list
                batches += [padded[i:i + b].tolist() for i in range(0, len(padded), b)]
            order = np.random.default_rng([self.seed, epoch, 1]).permutation(len(batches))
            batches = [batches[i] for i in order]
        self._epoch_batches = {epoch: batches}
        return batches

    def example(self, i: int) -> SFTExample:
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        rec_i, part = self.index[i]
        built = build_examples(self.records[rec_i], self.tokenizer, prompts=self.prompts, per_round=self.per_round,
                               seed=self.seed, index=rec_i, max_pixels=self.max_pixels)
        example = built[part]
        self._cache[i] = example
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return example

    def positions(self, k: int) -> list[int]:
        """Example indices of micro-batch k."""
        epoch, j = divmod(k, self.batches_per_epoch)
        return self._batches(epoch)[j]

    def micro_batch(self, k: int) -> list[SFTExample]:
        return [self.example(i) for i in self.positions(k)]


def synthetic_data(cfg: TrainConfig, out: Path) -> Path:
    """Generate the demo's synthetic trajectory set under `out` (once; reused when present): compact trajectories
    over the demo's distortion kinds, as `zoomiqa demo` makes them.

    Several processes: process 0 writes the set, then every process waits at a barrier (every process calls it
    exactly once, whatever it found) before anyone reads it. A process that still does not see the set after the
    barrier (each host has its own disk, as on a TPU pod without a shared out_dir) writes its own copy, which is
    the same (seeded), under a file lock so that processes sharing that disk write it once: no process ever reads
    a half-written file."""
    import fcntl

    from zoomiqa_jax.data.trajectories import DEMO_KINDS, build_demo_set

    path = out / "trajectories.jsonl"
    stamp = out / "settings.txt"
    settings = f"images={cfg.data.synthetic_images} size={cfg.data.synthetic_size} seed={cfg.data.seed}\n"

    def ready() -> bool:
        return path.exists() and stamp.exists() and stamp.read_text() == settings

    def build() -> None:
        out.mkdir(parents=True, exist_ok=True)
        with open(out / ".synthetic.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            if not ready():  # another process on this disk may have written it meanwhile
                build_demo_set(out, cfg.data.synthetic_images, seed=cfg.data.seed,
                               image_size=cfg.data.synthetic_size, style="compact", kinds=DEMO_KINDS)
                stamp.write_text(settings)  # last: its presence means the set is complete

    if jax.process_index() == 0 and not ready():
        build()
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"zoomiqa synthetic_data {out}")
        if not ready():
            build()
    return path


def load_records(path: str | Path, image_root: str = "", log: Callable[[str], None] = print, *,
                 max_bad_fraction: float = 1.0, out_dir: Path | None = None) -> list[SFTRecord]:
    """The usable records of a trajectory file (`sft_data.load_checked_sft`, every image decoded once); the bad
    ones are named in the log and in `out_dir/metrics.jsonl`, and `train.data_checks.BadDataError` stops the run
    when more than `max_bad_fraction` of the records are bad (nothing silently dropped)."""
    records, bad = load_checked_sft(path, image_root=image_root or None, cache_dir=out_dir, log=log)
    bad.finish(log, out_dir, max_bad_fraction)
    return records


# ------------------------------------------------------------------------------------------ batches
def make_batch(examples: Sequence[SFTExample], config: ModelConfig, buckets: SFTBuckets, pad_id: int) -> dict:
    """Collated NumPy micro-batch with the model inputs (position ids, vision metadata)."""
    batch = collate(examples, buckets, pad_token_id=pad_id)
    batch = add_model_inputs(batch, config, buckets.patch_counts)
    return {k: batch[k] for k in MODEL_KEYS}


def to_global(batch: dict, shardings: dict) -> dict:
    """NumPy batch -> global jax.Arrays laid out by `shardings`; each process supplies only its own shards."""
    def put(x: Any, s: Any) -> Any:
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, s, lambda idx: x[idx])

    out = {}
    for key, value in batch.items():
        if key == "vision_meta":
            out[key] = jax.tree.map(put, value, shardings[key])
        else:
            out[key] = put(value, shardings[key])
    return out


def export_final(graphdef: Any, params: Any, out_dir: Path, tok_dir: Path, log: Callable[[str], None]) -> Path | None:
    """The trained weights as an HF checkpoint in `out_dir` (with the tokenizer); process 0 only."""
    from zoomiqa_jax.checkpoint.hf import save_hf

    if jax.process_index() != 0:
        return None
    final = save_hf(nnx.merge(graphdef, jax.device_get(params)), out_dir, tokenizer_dir=tok_dir, overwrite=True)
    log(f"final weights (HF format): {final}")
    return final


# ------------------------------------------------------------------------------------------ the run
@dataclasses.dataclass
class SFTResult:
    step: int
    out_dir: Path
    final_hf: Path | None
    last_metrics: dict[str, float]
    resumed_from: int | None
    params: Any = None
    stopped: str = ""  # the signal that stopped the run early ("SIGTERM"), with a checkpoint at `step`; "" if none


def run_sft(cfg: TrainConfig, *, progress: bool = True, log: Callable[[str], None] | None = None,
            stop: StopRequest | None = None, allow_config_change: bool = False) -> SFTResult:
    """Train as configured (module docstring); resumes from the latest checkpoint in the checkpoint directory
    after checking that its saved config matches (`train.resume`; `allow_config_change` lets changes through).
    With `stop` (entered), a SIGINT / SIGTERM ends the run after the current optimizer step with a checkpoint
    (`train.preemption`); the result's `stopped` names the signal."""
    from zoomiqa_jax.processing.prompts import DEFAULT_PROMPTS, load_prompt_file
    from zoomiqa_jax.processing.tokenizer import load_tokenizer
    from zoomiqa_jax.train.checkpointing import TrainCheckpointer, abstract_like, write_model_metadata
    from zoomiqa_jax.train.flops import device_peak_flops, mfu, train_step_flops
    from zoomiqa_jax.train.metrics_log import MetricsLogger, progress_bar, show_metrics
    from zoomiqa_jax.train.optim import check_nonfinite_budget, make_optimizer, nonfinite_count, optimizer_step
    from zoomiqa_jax.train.resume import check_resume_config
    from zoomiqa_jax.train.sft import make_sft_step
    from zoomiqa_jax.train.step import batch_shardings
    from zoomiqa_jax.train.validate import validate_parallelism

    log = log or functools.partial(print, flush=True)
    initialize_distributed()
    validate_parallelism(cfg, jax.device_count())  # a batch or mesh that does not shard stops here (exit 2)
    out = Path(cfg.run.out_dir)
    check_resume_config(cfg, allow_change=allow_config_change, log=log)  # before the model loads
    out.mkdir(parents=True, exist_ok=True)
    train_path = Path(cfg.data.train) if cfg.data.train else synthetic_data(cfg, out / "data")
    records = load_records(train_path, cfg.data.image_root, log, max_bad_fraction=cfg.data.max_bad_fraction,
                           out_dir=out)  # before the model loads: bad data stops the run at once
    mesh: Mesh = make_mesh(cfg.parallel.mesh)
    model, config, weights_dir = load_model(cfg)
    tok_dir = tokenizer_dir(cfg, weights_dir)
    tokenizer = load_tokenizer(tok_dir)
    prompts = load_prompt_file(resolve_path(cfg.data.prompt_file)) if cfg.data.prompt_file else DEFAULT_PROMPTS

    stream = SFTStream(records, tokenizer, batch_size=cfg.data.batch_size, seed=cfg.data.seed,
                       per_round=cfg.data.per_round, prompts=prompts, max_pixels=cfg.data.max_pixels,
                       seq_buckets=cfg.data.seq_buckets if cfg.data.group_by_length else None, log=log)
    buckets = SFTBuckets(tuple(cfg.data.seq_buckets), PATCH_BUCKETS)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else config.bos_token_id
    total = cfg.optimizer_steps(stream.batches_per_epoch * cfg.data.batch_size)
    tx, schedule = make_optimizer(cfg.optim, total)

    graphdef, params = nnx.split(model, nnx.Param)
    rest = nnx.state(model, nnx.Not(nnx.Param))
    if jax.tree.leaves(rest):
        raise ValueError("the model holds non-parameter state; the SFT step trains nnx.Param only")
    p_shard = state_shardings(params, mesh)
    params = jax.device_put(params, p_shard)
    del model

    steps: dict[tuple, tuple[Callable, Callable, dict]] = {}

    def compiled(batch: dict) -> tuple[Callable, Callable, dict]:
        key = (batch["input_ids"].shape, batch["pixel_values"].shape, batch["vision_meta"].full_chunk)
        if key not in steps:
            init, step = make_sft_step(graphdef, params, tx, mesh=mesh, batch_example=batch)
            steps[key] = (init, step, batch_shardings(batch, mesh))
        return steps[key]

    first = make_batch(stream.micro_batch(0), config, buckets, pad_id)
    init_opt, _, _ = compiled(first)
    opt_state = init_opt(params)

    ckpt = TrainCheckpointer.from_config(cfg, log=log)
    micro = 0
    resumed_from = ckpt.latest_step()
    if resumed_from is not None:
        restored = ckpt.restore(params=abstract_like(params, p_shard),
                                opt_state=jax.tree.map(lambda x: abstract_like(x), opt_state))
        params, opt_state = restored.params, restored.opt_state
        micro = int(restored.data_state["micro_batch"])
        log(f"resumed from {ckpt.directory / str(restored.step)} (step {restored.step}, micro-batch {micro})")
    else:
        write_model_metadata(ckpt.directory, config, tokenizer_dir=tok_dir)
    if jax.process_index() == 0:
        save_train_config(cfg, out / "config.yaml")
    step = int(optimizer_step(opt_state))
    log(f"SFT: {len(records)} records -> {len(stream)} examples; {total} optimizer steps of "
        f"{cfg.data.batch_size} x {cfg.optim.grad_accum} examples; mesh {dict(mesh.shape)}; out {out}")

    peak = device_peak_flops()
    n_dev = mesh.size
    logger = MetricsLogger(out)
    bar = progress_bar(total, initial=step, desc="sft", enabled=progress and jax.process_index() == 0)
    window: dict[str, float] = {"tokens": 0.0, "flops": 0.0, "time": 0.0}
    last: dict[str, float] = {}
    at_boundary, stopped = True, ""  # between optimizer steps (not inside an accumulation)

    def save_checkpoint(force: bool) -> None:  # the same state on a schedule and on a stop signal
        ckpt.save(step, params=params, opt_state=opt_state, data_state={"micro_batch": micro}, config=cfg,
                  force=force)

    try:
        while step < total:
            if at_boundary and stop is not None and stop.agreed():  # every process, at the same step
                save_checkpoint(force=True)
                stopped = stop.signal_name
                log(f"{stopped}: stopping at step {step}; saving its checkpoint")
                break
            at_boundary = False
            t0 = time.perf_counter()
            batch = make_batch(stream.micro_batch(micro), config, buckets, pad_id)
            _, step_fn, shard = compiled(batch)
            gbatch = to_global(batch, shard)
            params, opt_state, metrics = step_fn(params, opt_state, gbatch)
            micro += 1
            new_step = int(optimizer_step(opt_state))  # blocks on the step: timings below are honest
            dt = time.perf_counter() - t0
            tokens = float(batch["attention_mask"].sum())
            window["tokens"] += tokens
            window["time"] += dt
            window["flops"] += train_step_flops(config, batch)  # forward + backward already (train.flops)
            skipped = int(nonfinite_count(opt_state))
            check_nonfinite_budget(skipped, cfg.run.max_nonfinite, new_step)
            if new_step == step:
                continue  # accumulating (or a skipped micro-step): no optimizer update yet
            step, at_boundary = new_step, True
            if step % cfg.run.log_every == 0 or step == total:
                values = {k: v for k, v in metrics.items()}
                values.update(lr=schedule(step - 1), nonfinite=skipped, micro_batch=micro,
                              tokens_per_s=window["tokens"] / max(window["time"], 1e-9),
                              step_time_s=window["time"] / cfg.run.log_every)
                if peak:
                    values["mfu"] = mfu(window["flops"], window["time"], peak, n_dev)
                last = logger.log(step, values)
                window = {"tokens": 0.0, "flops": 0.0, "time": 0.0}
                show_metrics(bar, last, advance=0)
            bar.update(1)
            if ckpt.should_save(step) or step == total:
                save_checkpoint(force=step == total)
        ckpt.wait()
    finally:
        bar.close()
        logger.close()
        ckpt.close()

    final = export_final(graphdef, params, out / "final", tok_dir, log) if cfg.run.export_hf and not stopped else None
    return SFTResult(step=step, out_dir=out, final_hf=final, last_metrics=last, resumed_from=resumed_from,
                     params=params, stopped=stopped)

