"""The optimizer: schedule values, the weight-decay mask, accumulation == big batch, the non-finite guard."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from zoomiqa_jax.config import ModelConfig
from zoomiqa_jax.model import Qwen25VL
from zoomiqa_jax.train.config import OptimSection
from zoomiqa_jax.train.optim import (
    NonFiniteBudgetError,
    check_nonfinite_budget,
    decay_mask,
    lr_schedule,
    make_optimizer,
    nonfinite_count,
    optimizer_step,
)


def _numpy_lr(s, peak, total, ratio, decay, end_ratio=0.0):
    w = math.ceil(ratio * total)
    if s < w:
        return peak * s / w
    p = min(1.0, (s - w) / (total - w))
    shape = 1 - p if decay == "linear" else 0.5 * (1 + math.cos(math.pi * p))
    return end_ratio * peak + (peak - end_ratio * peak) * shape


@pytest.mark.parametrize("decay", ["linear", "cosine"])
def test_schedule_matches_formula_at_known_steps(decay):
    sched = lr_schedule(2.5e-6, 100, 0.3, decay)
    # warm-up: 30 steps; step 0 is 0, step 15 is half the peak, step 30 the peak, step 100 zero
    assert float(sched(0)) == 0.0
    np.testing.assert_allclose(float(sched(15)), 1.25e-6, rtol=1e-6)
    np.testing.assert_allclose(float(sched(30)), 2.5e-6, rtol=1e-6)
    np.testing.assert_allclose(float(sched(65)), 1.25e-6, rtol=1e-5)  # half way down: both shapes give 1/2
    assert abs(float(sched(100))) < 1e-12
    for s in [0, 1, 7, 29, 30, 31, 50, 80, 99, 100, 120]:
        # float32 schedule: absolute error ~ peak * eps32 (1 + cos near pi cancels)
        want = _numpy_lr(s, 2.5e-6, 100, 0.3, decay)
        np.testing.assert_allclose(float(sched(s)), want, rtol=1e-5, atol=2.5e-6 * 2**-23 * 4)
    with_end = lr_schedule(1.0, 10, 0.0, decay, end_ratio=0.1)
    np.testing.assert_allclose(float(with_end(10)), 0.1, rtol=1e-6)
    np.testing.assert_allclose(float(with_end(0)), 1.0, rtol=1e-6)  # no warm-up: peak at once


def test_schedule_is_what_adamw_applies():
    cfg = OptimSection(lr=0.1, warmup_ratio=0.5, decay="linear", clip_norm=0.0, grad_accum=1, weight_decay=0.0,
                       b1=0.5, b2=0.5, eps=0.0)  # bias corrections exact in float32
    tx, sched = make_optimizer(cfg, total_steps=4)
    params = {"w": jnp.zeros(3)}
    state = tx.init(params)
    moved = []
    for _ in range(4):
        updates, state = tx.update({"w": jnp.ones(3)}, state, params)
        moved.append(float(-updates["w"][0]))
    # with a constant gradient Adam's normalised step m^ / sqrt(v^) is 1, so the update is the lr
    np.testing.assert_allclose(moved, [float(sched(s)) for s in range(4)], rtol=1e-5)
    np.testing.assert_allclose(moved, [0.0, 0.05, 0.1, 0.05], rtol=1e-5)


def test_decay_mask_on_tiny_model_tree():
    model = nnx.eval_shape(lambda: Qwen25VL(ModelConfig.tiny(), rngs=nnx.Rngs(0)))  # shapes only: fast
    state = nnx.state(model, nnx.Param)
    for tree in (state, nnx.to_pure_dict(state)):
        mask = decay_mask(tree)
        flat = {jax.tree_util.keystr(p): m for p, m in jax.tree_util.tree_flatten_with_path(mask)[0]}
        shapes = {jax.tree_util.keystr(p): x.shape for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}
        assert set(flat) == set(shapes)
        for path, m in flat.items():
            if "bias" in path or "norm" in path or "ln_q" in path:
                assert m is False, path
            elif "kernel" in path or "embedding" in path:
                assert m is True, path
        assert any("q_proj']['bias" in p for p in flat) and any("input_layernorm" in p for p in flat)
        assert not any(m and len(shapes[p]) < 2 for p, m in flat.items())
    no_embed = decay_mask(nnx.to_pure_dict(state), decay_embeddings=False)
    assert no_embed["language_model"]["embed_tokens"]["embedding"] is False
    assert no_embed["language_model"]["layers"][0]["mlp"]["up_proj"]["kernel"] is True


def test_masked_weight_decay_only_touches_masked_leaves():
    cfg = OptimSection(lr=0.1, warmup_ratio=0.0, weight_decay=0.5, clip_norm=0.0, grad_accum=1)
    tx, _ = make_optimizer(cfg, total_steps=10)
    params = {"lin": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}, "norm": {"weight": jnp.ones(2)}}
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params)
    np.testing.assert_allclose(updates["lin"]["kernel"], -0.1 * 0.5 * np.ones((2, 2)), rtol=1e-6)
    assert float(jnp.abs(updates["lin"]["bias"]).max()) == 0.0
    assert float(jnp.abs(updates["norm"]["weight"]).max()) == 0.0


def _regression():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(8, 5)), jnp.float32)
    y = jnp.asarray(rng.normal(size=(8, 3)), jnp.float32)
    params = {"dense": {"kernel": jnp.asarray(rng.normal(size=(5, 3)), jnp.float32), "bias": jnp.zeros(3)}}

    def loss(p, xb, yb):
        return jnp.mean((xb @ p["dense"]["kernel"] + p["dense"]["bias"] - yb) ** 2)

    return params, x, y, loss


def test_accumulation_equals_big_batch_step():
    params, x, y, loss = _regression()
    base = dict(lr=1e-2, warmup_ratio=0.0, weight_decay=0.1, clip_norm=0.5)
    big_tx, _ = make_optimizer(OptimSection(**base, grad_accum=1), total_steps=3)
    acc_tx, _ = make_optimizer(OptimSection(**base, grad_accum=4), total_steps=3)
    p_big, s_big = params, big_tx.init(params)
    p_acc, s_acc = params, acc_tx.init(params)
    big_update, acc_update, grad = jax.jit(big_tx.update), jax.jit(acc_tx.update), jax.jit(jax.grad(loss))
    for _ in range(3):
        u, s_big = big_update(grad(p_big, x, y), s_big, p_big)
        p_big = optax.apply_updates(p_big, u)
        for k in range(4):
            u, s_acc = acc_update(grad(p_acc, x[2 * k:2 * k + 2], y[2 * k:2 * k + 2]), s_acc, p_acc)
            if k < 3:
                assert float(jnp.abs(u["dense"]["kernel"]).max()) == 0.0  # nothing moves mid-accumulation
            p_acc = optax.apply_updates(p_acc, u)
    assert float(jnp.abs(p_big["dense"]["kernel"] - params["dense"]["kernel"]).max()) > 1e-3
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), p_big, p_acc)


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_nonfinite_step_is_skipped_and_counted_inside_jit(grad_accum):
    params, x, y, loss = _regression()
    tx, _ = make_optimizer(OptimSection(lr=1e-2, warmup_ratio=0.0, grad_accum=grad_accum), total_steps=5)

    @jax.jit
    def step(p, s, xb, yb):
        value, g = jax.value_and_grad(loss)(p, xb, yb)
        u, s = tx.update(g, s, p, loss=value)
        return optax.apply_updates(p, u), s

    p, s = step(params, tx.init(params), x, y)  # one good micro-step first: state is not the initial one
    bad_x = x.at[0, 0].set(jnp.nan)
    p2, s2 = step(p, s, bad_x, y)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), p2, p)
    flat_before, flat_after = jax.tree.leaves(s), jax.tree.leaves(s2)
    assert int(nonfinite_count(s)) == 0 and int(nonfinite_count(s2)) == 1
    assert bool(s2.last_finite) is False
    for a, b in zip(flat_before, flat_after, strict=True):
        if a.shape == () and a.dtype == jnp.int32 and int(b) == 1 and int(a) == 0:
            continue  # the counter itself
        if a.dtype == jnp.bool_:
            continue  # last_finite
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # an infinite loss with finite gradients is skipped too (loss= is checked)
    u, s3 = tx.update(jax.tree.map(jnp.zeros_like, p), s2, p, loss=jnp.inf)
    assert int(nonfinite_count(s3)) == 2 and float(jnp.abs(u["dense"]["kernel"]).max()) == 0.0
    # and training goes on afterwards; only good micro-steps count towards optimizer steps
    p4, s4 = step(p2, s3, x, y)
    assert int(nonfinite_count(s4)) == 2 and bool(s4.last_finite)
    assert int(optimizer_step(s4)) == 2 // grad_accum


def test_opt_state_shardings_map_through_tree_map_params():
    params, *_ = _regression()
    tx, _ = make_optimizer(OptimSection(grad_accum=4), total_steps=10)
    shape = jax.eval_shape(tx.init, params)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    mapped = optax.tree_map_params(tx, lambda _, s: s, shape, jax.tree.map(lambda _: device, params),
                                   transform_non_params=lambda _: None)
    assert any(leaf is device for leaf in jax.tree.leaves(mapped))


def test_nonfinite_budget():
    check_nonfinite_budget(3, 3)
    with pytest.raises(NonFiniteBudgetError, match="run.max_nonfinite=3"):
        check_nonfinite_budget(4, 3, step=17)
