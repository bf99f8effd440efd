"""Run in a subprocess with 8 simulated CPU devices: one SFT train step, single-device vs sharded meshes.

Prints one JSON line: per mesh, the max-abs-diff of loss, gradients and updated parameters vs the single device.
"""

import json
import os
import sys

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from tests.reference import image_prompt, random_pixels  # noqa: E402
from zoomiqa_jax.config import ModelConfig  # noqa: E402
from zoomiqa_jax.model import Qwen25VL, prepare_inputs  # noqa: E402
from zoomiqa_jax.parallel import make_mesh, state_shardings  # noqa: E402
from zoomiqa_jax.train.grpo import make_grpo_step, make_old_policy  # noqa: E402
from zoomiqa_jax.train.sft import forward_loss, make_sft_step  # noqa: E402
from zoomiqa_jax.train.step import batch_shardings  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


def make_batch(cfg: ModelConfig, rows: int = 8, seq: int = 40) -> dict:
    rng = np.random.default_rng(0)
    grids = [(1, 8, 8)] * rows
    ids = np.zeros((rows, seq), np.int32)
    labels = np.full((rows, seq), -100, np.int32)
    for r in range(rows):
        prompt = image_prompt(cfg, grids[:1], [1, 2, 3 + r])
        answer = rng.integers(5, 400, size=seq - len(prompt)).tolist()
        ids[r] = prompt + answer
        labels[r, len(prompt):] = answer
    mask = np.ones_like(ids)
    prep = prepare_inputs(cfg, ids, mask, np.array(grids))
    return {
        "input_ids": jnp.asarray(ids), "attention_mask": jnp.asarray(mask), "labels": jnp.asarray(labels),
        "position_ids": jnp.asarray(prep["position_ids"]), "pixel_values": jnp.asarray(random_pixels(cfg, grids)),
        "vision_meta": jax.tree.map(jnp.asarray, prep["vision_meta"]),
    }


def main() -> None:
    cfg = ModelConfig.tiny(tie_word_embeddings=False)
    graphdef, params0 = nnx.split(Qwen25VL(cfg, rngs=nnx.Rngs(0)), nnx.Param)
    batch = make_batch(cfg)
    tx = optax.adamw(1e-3, eps=1e-6)
    to_host = lambda tree: jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)

    def grads_of(p, b):
        return jax.grad(lambda q: forward_loss(nnx.merge(graphdef, q), b)[0])(p)

    init, step = make_sft_step(graphdef, params0, tx)
    ref_grads = to_host(jax.jit(grads_of)(params0, batch))
    p, _, m = step(jax.tree.map(jnp.copy, params0), init(params0), batch)
    ref_params, ref_loss = to_host(p), float(m["loss"])
    out = {"devices": jax.device_count(), "ref_loss": ref_loss}
    for shape in [(8, 1, 1), (2, 4, 1), (2, 2, 2)]:
        mesh = make_mesh(shape)
        init, step = make_sft_step(graphdef, params0, tx, mesh=mesh, batch_example=batch)
        opt = init(params0)
        p_shard = state_shardings(params0, mesh)
        grads = to_host(jax.jit(grads_of, in_shardings=(p_shard, batch_shardings(batch, mesh)),
                                out_shardings=p_shard)(params0, batch))
        p, _, m = step(jax.tree.map(jnp.copy, params0), opt, batch)
        partitioned = sum(not x.sharding.is_fully_replicated for x in jax.tree.leaves(p))
        diff = lambda a, b: max(float(np.abs(x - y).max()) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
        out["x".join(map(str, shape))] = {
            "loss": abs(float(m["loss"]) - ref_loss),
            "grads": diff(grads, ref_grads),
            "params": diff(to_host(p), ref_params),
            "partitioned_params": partitioned,
            "params_total": len(jax.tree.leaves(p)),
        }
    out["grpo"] = grpo_checks(cfg, graphdef, params0, batch)
    print(json.dumps(out))


def rollout_batch(sft_batch: dict, k: int = 4) -> dict:
    """Turn the SFT batch into a rollout batch: generated = labelled tokens, two rating candidates per row."""
    labels = np.asarray(sft_batch["labels"])
    loss_mask = labels != -100
    cand = np.zeros_like(loss_mask)
    positions = np.full((labels.shape[0], k), -1, np.int32)
    for r in range(labels.shape[0]):
        idx = np.flatnonzero(loss_mask[r])[-3:-1]  # two tokens near the end of the answer
        cand[r, idx] = True
        positions[r, : len(idx)] = idx
    rng = np.random.default_rng(1)
    batch = {key: v for key, v in sft_batch.items() if key != "labels"}
    batch |= {
        "loss_mask": jnp.asarray(loss_mask), "candidate_mask": jnp.asarray(cand),
        "logit_positions": jnp.asarray(positions), "advantages": jnp.asarray(rng.standard_normal(len(labels)),
                                                                             jnp.float32),
    }
    return batch


def grpo_checks(cfg, graphdef, params0, sft_batch) -> dict:
    """Two updates on one rollout batch (the second sees pi_theta != pi_old, so KL-Coverage acts), single device
    vs each mesh; plus the first update's KL-Coverage value, which must be exactly 0."""
    batch = rollout_batch(sft_batch)
    tx = optax.adamw(1e-3, eps=1e-6)
    to_host = lambda tree: jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)

    def run(mesh):
        old = make_old_policy(graphdef, params0, mesh=mesh, batch_example=batch)(params0, batch)
        full = batch | old
        init, first = make_grpo_step(graphdef, params0, tx, mesh=mesh, batch_example=batch)
        _, later = make_grpo_step(graphdef, params0, tx, mesh=mesh, batch_example=full)
        p, o, m1 = first(jax.tree.map(jnp.copy, params0), init(params0), batch)
        p, o, m2 = later(p, o, full)
        assert float(m1["pg/ratio_min"]) == float(m1["pg/ratio_max"]) == 1.0
        return to_host(p), float(m1["klcov/value"]), float(m2["klcov/value"]), float(m2["loss"])

    ref_p, klc1, klc2, ref_loss = run(None)
    res = {"first_update_klcov": klc1, "second_update_klcov": klc2}
    diff = lambda a, b: max(float(np.abs(x - y).max()) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    for shape in [(8, 1, 1), (2, 4, 1), (2, 2, 2)]:
        p, _, k2, loss = run(make_mesh(shape))
        res["x".join(map(str, shape))] = {"params": diff(p, ref_p), "loss": abs(loss - ref_loss),
                                         "klcov": abs(k2 - klc2)}
    return res


if __name__ == "__main__":
    main()
