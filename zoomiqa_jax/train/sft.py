"""Supervised fine-tuning (Zoom-IQA stage 1, arXiv:2601.02918 Sec. 3.1.2): masked cross-entropy on the model's own
tokens, and the sharded train step.

Labels follow the HF convention: `labels[b, t]` is the token at position t when the model produced it, else -100
(prompts, chat scaffolding, images, crop observations). Position t - 1 predicts it:

    loss = sum_{b,t: labels[b,t] != -100} -log p(labels[b,t] | tokens < t)  /  #{valid labels}

(a token mean over the whole batch, so long answers weigh as much per token as short ones).

`make_sft_step` is the generic sharded step of `zoomiqa_jax.train.step` with this loss.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh

from zoomiqa_jax.parallel.rules import DEFAULT_RULES, MeshAxes
from zoomiqa_jax.train.step import batch_logits, make_train_step

IGNORE = -100


def sft_loss(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Masked next-token cross-entropy. logits [batch, seq, vocab]; labels [batch, seq] (-100 = ignore)."""
    pred = logits[:, :-1].astype(jnp.float32)
    target = labels[:, 1:]
    valid = target != IGNORE
    logp = jax.nn.log_softmax(pred, axis=-1)
    nll = -jnp.take_along_axis(logp, jnp.where(valid, target, 0)[..., None], axis=-1)[..., 0]
    count = valid.sum()
    denom = jnp.maximum(count, 1)
    loss = jnp.where(valid, nll, 0.0).sum() / denom
    correct = (jnp.argmax(pred, axis=-1) == target) & valid
    return loss, {"loss": loss, "token_accuracy": correct.sum() / denom, "tokens": count}


def forward_loss(model: nnx.Module, batch: Mapping[str, Any]) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Model forward on a prepared batch (see `zoomiqa_jax.train.sft_data`) and its SFT loss."""
    return sft_loss(batch_logits(model, batch), batch["labels"])


def make_sft_step(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    tx: optax.GradientTransformation,
    mesh: Mesh | None = None,
    batch_example: Mapping[str, Any] | None = None,
    rules: Mapping[str, MeshAxes] = DEFAULT_RULES,
) -> tuple[Callable, Callable]:
    """(init_opt_state, step) for SFT; see `zoomiqa_jax.train.step.make_train_step`."""
    return make_train_step(graphdef, params, tx, forward_loss, mesh=mesh, batch_example=batch_example, rules=rules)
