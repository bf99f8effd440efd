"""Compile the run's programs for a mesh of device descriptions: the SFT step, the GRPO update step and the rollout
generation program, from abstract shapes (`plan.shapes`), with the training code's own step builders and layout.

Each `plan_*` returns a `ProgramPlan`: the per-chip memory XLA's buffer assignment reports
(`compiled.memory_analysis()`), the compiled FLOPs (`compiled.cost_analysis()`, per chip, times the chips) and the
analytic FLOPs of `train.flops` for the same work.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from zoomiqa_jax.config import ModelConfig
from zoomiqa_jax.parallel.rules import batch_sharding, state_shardings
from zoomiqa_jax.plan import shapes


class PlanError(ValueError):
    """A program that cannot be sharded or compiled for the mesh; the message names the program and the cause."""


class DoesNotFitError(PlanError):
    """The TPU compiler itself refused the program: its buffers exceed the chip's HBM (RESOURCE_EXHAUSTED)."""


@dataclasses.dataclass
class ProgramPlan:
    name: str  # sft_step | grpo_step | generate
    argument_bytes: int  # per chip: parameters, optimizer state, batch
    output_bytes: int
    alias_bytes: int  # outputs that reuse donated argument buffers
    temp_bytes: int  # activations, gradients, workspace
    code_bytes: int
    compiled_flops: float  # all chips
    analytic_flops: float | None  # train.flops for the same work; None where no analytic count applies
    flops_note: str
    compile_s: float
    shape_note: str  # the batch it was compiled for

    @property
    def peak_bytes(self) -> int:
        """Per-chip HBM the program needs: arguments + outputs - aliased + temporaries + code."""
        return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes + self.code_bytes


def _compile(name: str, lower: Callable[[], Any], n_chips: int) -> tuple[Any, float]:
    t0 = time.perf_counter()
    try:
        compiled = lower().compile()
    except Exception as err:  # sharding errors are ValueErrors; XLA's are XlaRuntimeError
        text = str(err).strip().splitlines()
        if "RESOURCE_EXHAUSTED" in str(err) or "Ran out of memory" in str(err):
            raise DoesNotFitError(f"{name}: does NOT fit: the TPU compiler reports {' '.join(text[:2])[:600]}"
                                  ) from None
        raise PlanError(f"{name}: cannot shard or compile for this mesh: {type(err).__name__}: "
                        f"{' '.join(text[:3])[:900]}") from None
    return compiled, time.perf_counter() - t0


SCAN_NOTE = ("parallel.scan_layers: the layers run in a loop whose body XLA's cost analysis counts once, so the "
             "compiled FLOPs miss the other layers; compare FLOPs with scan_layers=false")


def _plan(name: str, compiled: Any, n_chips: int, compile_s: float, analytic: float | None, note: str,
          shape_note: str, scanned: bool = False) -> ProgramPlan:
    if scanned and analytic is not None:
        analytic, note = None, SCAN_NOTE
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost  # jax < 0.5 returned one dict per program
    return ProgramPlan(name, int(mem.argument_size_in_bytes), int(mem.output_size_in_bytes),
                       int(mem.alias_size_in_bytes), int(mem.temp_size_in_bytes),
                       int(mem.generated_code_size_in_bytes), float(cost.get("flops", 0.0)) * n_chips, analytic,
                       note, compile_s, shape_note)


def _with_shardings(tree: Any, shardings: Any) -> Any:
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def train_flops(config: ModelConfig, batch: dict[str, Any], grids: list[tuple[int, int, int]]) -> float:
    """`train.flops` for one training micro-batch (forward + backward): estimate_flops_per_token(T) for every
    token slot of input_ids (padding included, as the step computes it) plus estimate_vision_flops for every
    image and for the padding patches of the bucket."""
    from zoomiqa_jax.train.flops import estimate_flops_per_token, estimate_vision_flops

    rows, seq = batch["input_ids"].shape
    counts = [t * h * w for t, h, w in grids]
    padding = batch["pixel_values"].shape[0] - sum(counts)
    vision = sum(estimate_vision_flops(config.vision, p) for p in counts + ([padding] if padding else []))
    return estimate_flops_per_token(config, seq) * rows * seq + vision


def plan_sft(cfg: Any, mesh: Mesh, images_per_row: int = 2, image_hw: tuple[int, int] | None = None) -> ProgramPlan:
    """The SFT step of `train.sft.make_sft_step` for the largest micro-batch of `cfg` on `mesh`."""
    from zoomiqa_jax.train.optim import make_optimizer
    from zoomiqa_jax.train.sft import make_sft_step

    model, config = shapes.abstract_model(cfg)
    graphdef, params = nnx.split(model, nnx.Param)
    tx, _ = make_optimizer(cfg.optim, max(cfg.run.steps, 1))
    batch = shapes.sft_batch(cfg, config, images_per_row, image_hw)
    grids = [shapes.image_grid(config, cfg.data.max_pixels, image_hw)] * (images_per_row * batch["input_ids"].shape[0])
    init, step = make_sft_step(graphdef, params, tx, mesh=mesh, batch_example=batch)
    opt_state = jax.eval_shape(init, params)
    compiled, secs = _compile("sft_step", lambda: step.lower(params, opt_state, batch), mesh.size)
    rows, seq = batch["input_ids"].shape
    return _plan("sft_step", compiled, mesh.size, secs, train_flops(config, batch, grids),
                 "forward + backward (train.flops); the optimizer update is not in the analytic count",
                 f"{rows} rows x {seq} tokens, {batch['pixel_values'].shape[0]} patches", cfg.parallel.scan_layers)


def plan_grpo(cfg: Any, mesh: Mesh, images_per_row: int = 2, image_hw: tuple[int, int] | None = None) -> ProgramPlan:
    """The GRPO update step of `train.grpo.make_grpo_step` for the largest mini-batch of `cfg` on `mesh`: the
    later-update variant (with pi_old's log-probs and candidate logits) when one rollout batch takes several
    updates (grpo.epochs x grpo.mini_batches > 1), else the first-update one."""
    from zoomiqa_jax.train.grpo import OLD_KEYS, make_grpo_step, policy_outputs
    from zoomiqa_jax.train.grpo_loop import vision_mask
    from zoomiqa_jax.train.optim import make_optimizer

    g, ro = cfg.grpo, cfg.rollout
    model, config = shapes.abstract_model(cfg)
    graphdef, params = nnx.split(model, nnx.Param)
    tx, _ = make_optimizer(cfg.optim, max(cfg.run.steps, 1), frozen=None if g.train_vision else vision_mask)
    batch = shapes.grpo_batch(cfg, config, images_per_row, image_hw)
    if g.epochs * g.mini_batches > 1:
        old = jax.eval_shape(lambda p, b: policy_outputs(nnx.merge(graphdef, p), b, ro.temperature), params, batch)
        batch = {**batch, **dict(zip(OLD_KEYS, old))}
    loss_cfg = dataclasses.replace(g.loss_config(), temperature=ro.temperature)
    init, step = make_grpo_step(graphdef, params, tx, loss_cfg, mesh=mesh, batch_example=batch)
    opt_state = jax.eval_shape(init, params)
    compiled, secs = _compile("grpo_step", lambda: step.lower(params, opt_state, batch), mesh.size)
    rows, seq = batch["input_ids"].shape
    grids = [shapes.image_grid(config, cfg.data.max_pixels, image_hw)] * (images_per_row * rows)
    variant = "later update (with pi_old)" if "old_logp" in batch else "first update"
    return _plan("grpo_step", compiled, mesh.size, secs, train_flops(config, batch, grids),
                 "forward + backward (train.flops); the optimizer update is not in the analytic count",
                 f"{rows} rows x {seq} tokens, {batch['pixel_values'].shape[0]} patches, {variant}",
                 cfg.parallel.scan_layers)


def plan_generate(cfg: Any, mesh: Mesh, image_hw: tuple[int, int] | None = None) -> ProgramPlan:
    """The rollout generation program (`inference.engine`'s jitted prefill + decode loop) for the stage-1 call of a
    GRPO step, as one SPMD program on `mesh`: the state laid out by the rules, the prompt rows over the batch
    axes like a training batch (`train.step.batch_shardings`), GSPMD propagating the rest."""
    from zoomiqa_jax.inference import engine
    from zoomiqa_jax.train.step import batch_shardings

    model, config = shapes.abstract_model(cfg)
    graphdef, state = nnx.split(model)
    state = _with_shardings(state, state_shardings(state, mesh))
    a = shapes.generate_args(cfg, config, image_hw)
    static = a.pop("static")
    named = {"input_ids": a["ids"], "attention_mask": a["mask"], "position_ids": a["position_ids"],
             "pixel_values": a["pixels"], "vision_meta": a["meta"], "next_pos": a["next_pos"]}
    sh = batch_shardings(named, mesh)
    replicated = NamedSharding(mesh, PartitionSpec())
    ways = mesh.size // mesh.shape["tensor"]
    keys_sh = batch_sharding(mesh, 1, 0) if a["row_keys"].shape[0] % ways == 0 else replicated
    put = lambda x, s: _with_shardings(x, s)
    args = (put(a["ids"], sh["input_ids"]), put(a["mask"], sh["attention_mask"]),
            put(a["pixels"], sh["pixel_values"]), put(a["meta"], sh["vision_meta"]),
            put(a["position_ids"], sh["position_ids"]), put(a["next_pos"], sh["next_pos"]),
            put(a["row_keys"], keys_sh), *(put(a[k], replicated) for k in ("eos_ids", "pad_id", "limit",
                                                                        "temperature")))
    top_p = put(a["top_p"], replicated)
    lower = lambda: engine._generate_program.lower(graphdef, state, *args, static["top_k"], top_p,
                                                   max_new=static["max_new"], greedy=static["greedy"],
                                                   group=static["group"])
    compiled, secs = _compile("generate", lower, mesh.size)
    rows, prompt = a["ids"].shape
    return _plan("generate", compiled, mesh.size, secs, None,
                 "XLA counts the decode loop's body once (not x new tokens): no analytic comparison",
                 f"{rows} prompts x {prompt} tokens, group {static['group']}, {static['max_new']} new tokens")

