"""The GRPO step moves the policy the right way: one update raises the log-probability of the sampled tokens of
positive-advantage sequences and lowers it for negative ones (a sign or masking error would flip or blur this)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from zoomiqa_jax.config import ModelConfig
from zoomiqa_jax.model import Qwen25VL
from zoomiqa_jax.train.grpo import make_grpo_step, policy_outputs
from zoomiqa_jax.train.grpo_loss import GrpoLossConfig


def _batch(n: int = 6, t: int = 24, prompt: int = 10, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    cfg = ModelConfig.tiny()
    ids = rng.integers(0, cfg.text.vocab_size - 14, size=(n, t)).astype(np.int32)
    loss_mask = np.zeros((n, t), np.int32)
    loss_mask[:, prompt:] = 1
    candidate = np.zeros((n, t), np.int32)
    candidate[:, t - 3:t - 1] = 1
    positions = np.tile(np.arange(t - 3, t - 1, dtype=np.int32), (n, 1))
    return {
        "input_ids": ids, "attention_mask": np.ones((n, t), np.int32),
        "position_ids": np.broadcast_to(np.arange(t, dtype=np.int32), (3, n, t)).copy(),
        "loss_mask": loss_mask, "candidate_mask": candidate, "logit_positions": positions,
        "advantages": np.asarray([1.0, -1.0] * (n // 2), np.float32),
    }


@pytest.mark.parametrize("kl_cov", ["none", "zoomiqa"])
def test_one_update_follows_the_advantage_sign(kl_cov):
    model = Qwen25VL(ModelConfig.tiny(), rngs=nnx.Rngs(3))
    graphdef, params = nnx.split(model, nnx.Param)
    batch = jax.tree.map(jnp.asarray, _batch())
    before, _ = policy_outputs(nnx.merge(graphdef, params), batch)
    init, step = make_grpo_step(graphdef, params, optax.sgd(0.5), GrpoLossConfig(kl_cov=kl_cov))
    new_params, _, metrics = step(jax.tree.map(jnp.copy, params), init(params), batch)
    after, _ = policy_outputs(nnx.merge(graphdef, new_params), batch)
    delta = np.asarray(after - before)
    mask = np.asarray(batch["loss_mask"], bool)
    adv = np.asarray(batch["advantages"])
    up = delta[adv > 0][mask[adv > 0]].mean()
    down = delta[adv < 0][mask[adv < 0]].mean()
    assert float(metrics["klcov/penalty"]) == 0.0  # first update: pi_old is the current policy
    assert up > 0 > down, (up, down)
    # tokens outside the loss mask carry no gradient of their own; the masked tokens moved far more
    assert abs(up) > 1e-3 and abs(down) > 1e-3
