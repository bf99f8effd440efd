"""The SFT / GRPO optimizer: AdamW, warm-up then linear or cosine decay, clipping, accumulation, a non-finite guard.

    tx, schedule = make_optimizer(cfg.optim, total_steps)      # cfg: zoomiqa_jax.train.config.TrainConfig
    opt_state = tx.init(params)
    updates, opt_state = tx.update(grads, opt_state, params)   # optionally loss=loss (checked for finiteness)
    params = optax.apply_updates(params, updates)
    nonfinite_count(opt_state)                                 # skipped micro-steps so far
    schedule(optimizer_step(opt_state) - 1)                    # the lr of the latest update (for logging)

The transformation, outermost first:

    skip_nonfinite         a micro-step whose gradient (or `loss=`) is not finite changes nothing but a counter
    optax.MultiSteps(k)    averages k micro-batch gradients; the inner chain runs on every k-th call only
    clip_by_global_norm    on the accumulated gradient:  g <- g * min(1, c / ||g||_2)
    adamw(schedule)        m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2;  m^ = m/(1-b1^t), v^ = v/(1-b2^t)
                           u = -lr_t (m^ / (sqrt(v^) + eps) + wd * mask * p)

Accumulation: MultiSteps keeps the running MEAN of the k micro-gradients, so k micro-batches of equal size equal one
big-batch step of a per-sample-mean loss. (With the token-mean SFT loss, micro-batches holding different numbers
of valid tokens weigh equally; that is what HF Trainer / LLaMA-Factory do as well.)

Weight-decay mask (`decay_mask`): decayed are matrices and convolution kernels (ndim >= 2); not decayed are biases
and norm weights (every 1-D leaf, and anything under a module whose name holds "norm"). Embeddings (`embedding`
leaves, which also serve as the tied LM head) are decayed by default, as HF Trainer's `get_decay_parameter_names`
does for Qwen fine-tuning (it excludes only biases and norms); `decay_embeddings=False` exempts them.

Precision: parameters stay in `model.param_dtype` (float32 master weights by default; the model casts to the bf16
compute dtype inside each layer), and AdamW's first moment is kept in float32 even for bf16 parameters
(`mu_dtype`). With bf16 parameters the update itself is rounded to bf16: steps below ~2^-8 of a weight are lost.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from zoomiqa_jax.train.config import OptimSection


def lr_schedule(
    peak: float, total_steps: int, warmup_ratio: float, decay: str = "cosine", end_ratio: float = 0.0
) -> optax.Schedule:
    """Learning rate at optimizer step s (0-based; the first update uses s = 0), W = ceil(warmup_ratio * T):

        s <  W:  peak * s / W                                     (linear warm-up from 0)
        s >= W:  end + (peak - end) * shape(p),  p = min(1, (s - W) / (T - W)),  end = end_ratio * peak
                 shape = 1 - p (linear)  or  (1 + cos(pi p)) / 2 (cosine)

    These are HF transformers' `get_linear_schedule_with_warmup` / `get_cosine_schedule_with_warmup` (end = 0).
    """
    if decay not in ("linear", "cosine"):
        raise ValueError(f"optim.decay must be 'linear' or 'cosine', got {decay!r}")
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    warmup = math.ceil(warmup_ratio * total_steps)
    end = end_ratio * peak

    def schedule(step: jax.Array | int) -> jax.Array:
        s = jnp.asarray(step, jnp.float32)
        warm = peak * s / max(warmup, 1)
        p = jnp.clip((s - warmup) / max(total_steps - warmup, 1), 0.0, 1.0)
        shape = 1.0 - p if decay == "linear" else 0.5 * (1.0 + jnp.cos(jnp.pi * p))
        return jnp.where(s < warmup, warm, end + (peak - end) * shape)

    return schedule


def _names(path: tuple[Any, ...]) -> list[str]:
    """Key path -> names, dropping nnx's trailing `.value`."""
    out = []
    for k in path:
        name = getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))
        out.append(str(name))
    return out[:-1] if out and out[-1] == "value" else out


def decay_mask(params: Any, decay_embeddings: bool = True) -> Any:
    """A tree like `params` (a pure dict or an nnx.State) of bools: True where weight decay applies.

    Decayed: leaves with ndim >= 2 (kernels); not decayed: 1-D leaves (biases, norm weights) and anything whose
    path holds a "norm" module; embeddings (leaf name `embedding`) follow `decay_embeddings`."""

    def one(path: tuple[Any, ...], leaf: Any) -> bool:
        names, ndim = _names(path), len(getattr(leaf, "shape", ()))
        if ndim < 2 or names[-1] in ("bias", "scale") or any("norm" in n.lower() for n in names):
            return False
        if names[-1] == "embedding":
            return decay_embeddings
        return True

    return jax.tree_util.tree_map_with_path(one, params)


# ------------------------------------------------------------------------------------------ non-finite guard
class SkipNonFiniteState(NamedTuple):
    inner_state: Any
    nonfinite_count: jax.Array  # int32: micro-steps skipped so far (never reset)
    last_finite: jax.Array  # bool: whether the latest micro-step was applied


def all_finite(tree: Any) -> jax.Array:
    """True iff every element of every leaf is finite (a scalar bool array; jit-safe)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def skip_nonfinite(inner: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    """Wrap `inner` so that a micro-step whose gradient or `loss=` is non-finite is a no-op.

    ok = all(isfinite(grads)) and isfinite(loss):   updates = ok ? inner_updates : 0,
    state = ok ? inner_state' : inner_state,   nonfinite_count += !ok.
    Pure and branch-free (jnp.where), so it runs inside jit and under any sharding; unlike
    `optax.apply_if_finite` it never applies a bad update after a number of failures: stopping the run is the
    trainer's call (`check_nonfinite_budget`). Under accumulation a skipped micro-batch is simply not accumulated:
    the optimizer step then waits for one more good micro-batch."""
    inner = optax.with_extra_args_support(inner)

    def init(params: Any) -> SkipNonFiniteState:
        return SkipNonFiniteState(inner.init(params), jnp.zeros([], jnp.int32), jnp.asarray(True))

    def update(updates: Any, state: SkipNonFiniteState, params: Any = None, *, loss: jax.Array | None = None,
               **extra: Any) -> tuple[Any, SkipNonFiniteState]:
        ok = all_finite(updates)
        if loss is not None:
            ok = ok & jnp.all(jnp.isfinite(loss))
        new_updates, new_inner = inner.update(updates, state.inner_state, params, **extra)
        new_updates = jax.tree.map(lambda u: jnp.where(ok, u, jnp.zeros_like(u)), new_updates)
        new_inner = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new_inner, state.inner_state)
        count = state.nonfinite_count + jnp.where(ok, 0, 1).astype(jnp.int32)
        return new_updates, SkipNonFiniteState(new_inner, count, ok)

    return optax.GradientTransformationExtraArgs(init, update)


def nonfinite_count(opt_state: Any) -> jax.Array:
    """The skipped-micro-step counter of an optimizer state built by `make_optimizer`."""
    if not isinstance(opt_state, SkipNonFiniteState):
        raise TypeError(f"expected the state of make_optimizer's transformation, got {type(opt_state).__name__}")
    return opt_state.nonfinite_count


def optimizer_step(opt_state: Any) -> jax.Array:
    """Optimizer updates applied so far (micro-steps / grad_accum, skipped micro-steps not counted): the index the
    lr schedule uses for the next update, so the lr of the latest update is schedule(optimizer_step(state) - 1)."""
    inner = opt_state.inner_state if isinstance(opt_state, SkipNonFiniteState) else opt_state
    if isinstance(inner, optax.MultiStepsState):
        return inner.gradient_step
    is_sched = lambda x: isinstance(x, optax.ScaleByScheduleState)  # noqa: E731
    counts = [x.count for x in jax.tree.leaves(inner, is_leaf=is_sched) if is_sched(x)]
    if not counts:
        raise TypeError(f"no schedule counter in an optimizer state of type {type(opt_state).__name__}")
    return counts[0]


class NonFiniteBudgetError(RuntimeError):
    """More non-finite losses than `run.max_nonfinite` allows."""


def check_nonfinite_budget(count: int, max_nonfinite: int, step: int | None = None) -> None:
    """Host-side: raise NonFiniteBudgetError once `count` exceeds `max_nonfinite` (config key run.max_nonfinite)."""
    if int(count) > max_nonfinite:
        at = f" at step {step}" if step is not None else ""
        raise NonFiniteBudgetError(
            f"{int(count)} updates skipped for a non-finite loss or gradient{at}, more than "
            f"run.max_nonfinite={max_nonfinite}; lower optim.lr or inspect the data"
        )


# ------------------------------------------------------------------------------------------ the optimizer
def make_optimizer(
    cfg: OptimSection, total_steps: int, mu_dtype: Any = jnp.float32, frozen: Any = None
) -> tuple[optax.GradientTransformationExtraArgs, optax.Schedule]:
    """(transformation, lr schedule) for `total_steps` optimizer steps (each of `cfg.grad_accum` micro-steps).

    The schedule is indexed by optimizer steps; call `tx.update` once per micro-batch. `frozen` (a function
    params -> bool tree, or a bool tree) marks parameters whose updates are zeroed AFTER AdamW, so neither the
    gradient nor weight decay moves them (their moments are still allocated)."""
    schedule = lr_schedule(cfg.lr, total_steps, cfg.warmup_ratio, cfg.decay, cfg.end_lr_ratio)
    parts = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm > 0 else []
    parts.append(optax.adamw(
        schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay, mu_dtype=mu_dtype,
        mask=lambda p: decay_mask(p, cfg.decay_embeddings),
    ))
    if frozen is not None:
        parts.append(optax.masked(optax.set_to_zero(), frozen))
    tx: optax.GradientTransformation = optax.chain(*parts)
    if cfg.grad_accum > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=cfg.grad_accum).gradient_transformation()
    return skip_nonfinite(tx), schedule
