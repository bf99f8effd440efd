"""Remat and scan-over-layers are execution switches: same parameter tree, same float32 logits and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from zoomiqa_jax.config import ModelConfig
from zoomiqa_jax.model import LayerCache, Qwen25VL, causal_mask, prepare_inputs
from zoomiqa_jax.model.text import REMAT_POLICIES, remat_policy

TOL = 1e-5
VARIANTS = [("full", False), ("none", True), ("dots_saveable", True)]
CFG = ModelConfig.tiny()
GRIDS = [(1, 8, 8), (1, 8, 12)]


def _batch():
    """Two left-padded image prompts (one image each), as the chat template lays them out."""
    m2 = CFG.vision.spatial_merge_size**2
    rows = []
    for (t, h, w), text in zip(GRIDS, ([1, 2], [3, 4, 5, 6])):
        img = [CFG.vision_start_token_id] + [CFG.image_token_id] * (t * h * w // m2) + [CFG.vision_end_token_id]
        rows.append(text + img + [7, 8, 9])
    n = max(map(len, rows))
    ids = np.zeros((len(rows), n), np.int32)
    mask = np.zeros((len(rows), n), np.int32)
    for i, r in enumerate(rows):
        ids[i, n - len(r):] = r
        mask[i, n - len(r):] = 1
    prep = prepare_inputs(CFG, ids, mask, np.asarray(GRIDS))
    pixels = np.random.default_rng(0).standard_normal((sum(t * h * w for t, h, w in GRIDS), CFG.vision.patch_dim))
    return dict(input_ids=jnp.asarray(ids), attention_mask=jnp.asarray(mask), pixel_values=jnp.asarray(pixels,
                jnp.float32), position_ids=jnp.asarray(prep["position_ids"]), vision_meta=prep["vision_meta"])


BATCH = _batch()


def _logits(params: nnx.State, graphdef: nnx.GraphDef, batch: dict) -> jax.Array:
    b = dict(batch)
    return nnx.merge(graphdef, params)(b.pop("input_ids"), b.pop("attention_mask"), b.pop("pixel_values"), **b)


def _loss(params: nnx.State, graphdef: nnx.GraphDef, batch: dict) -> jax.Array:
    """Mean next-token log-likelihood over valid positions."""
    logp = jax.nn.log_softmax(_logits(params, graphdef, batch)[:, :-1])
    ids, mask = batch["input_ids"], batch["attention_mask"]
    picked = jnp.take_along_axis(logp, ids[:, 1:, None], axis=-1)[..., 0]
    valid = mask[:, 1:] * mask[:, :-1]
    return -(picked * valid).sum() / valid.sum()


logits_jit = jax.jit(_logits, static_argnums=1)
grad_jit = jax.jit(jax.grad(_loss), static_argnums=1)


def _paths(state: nnx.State) -> list:
    return [p for p, _ in nnx.to_flat_state(state)]


def _primitives(jaxpr) -> list[str]:
    """Primitive names of a jaxpr and of all the jaxprs nested in its equations' parameters."""
    names = []
    for eqn in jaxpr.eqns:
        names.append(eqn.primitive.name)
        for p in eqn.params.values():
            for sub in p if isinstance(p, (tuple, list)) else [p]:
                sub = getattr(sub, "jaxpr", sub)  # ClosedJaxpr -> Jaxpr
                if hasattr(sub, "eqns"):
                    names += _primitives(sub)
    return names


def _is_remat(name: str) -> bool:
    return name.startswith("remat") or name == "checkpoint"


@pytest.fixture(scope="module")
def plain():
    model = Qwen25VL(CFG, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    return graphdef, params, np.asarray(logits_jit(params, graphdef, BATCH)), grad_jit(params, graphdef, BATCH)


def _max_diff(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max())


@pytest.mark.parametrize("remat,scan", VARIANTS, ids=[f"{r}-scan{s}" for r, s in VARIANTS])
def test_same_params_logits_and_grads(plain, remat, scan):
    graphdef, params, ref_logits, ref_grads = plain
    model = Qwen25VL(CFG, rngs=nnx.Rngs(0), remat=remat, scan_layers=scan)
    g, p = nnx.split(model)
    assert _paths(p) == _paths(params)
    assert all(_max_diff(a, b) == 0 for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(params)))
    assert g != graphdef  # the switches are static graphdef data

    err = _max_diff(logits_jit(params, g, BATCH), ref_logits)
    assert err <= TOL, f"logits max-abs-diff {err:.3g}"
    grads = grad_jit(params, g, BATCH)
    assert _paths(grads) == _paths(ref_grads)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(grads), jax.tree.leaves(ref_grads)):
        err = _max_diff(a, b)
        assert err <= TOL, f"grad {jax.tree_util.keystr(path)}: max-abs-diff {err:.3g}"


def test_switches_act_in_the_jaxpr(plain):
    graphdef, params, ref_logits, _ = plain
    model = nnx.merge(graphdef, params)
    n_text, n_vision = CFG.text.num_hidden_layers, CFG.vision.depth

    def prims() -> list[str]:
        g, p = nnx.split(model)
        return _primitives(jax.make_jaxpr(_loss, static_argnums=1)(p, g, BATCH).jaxpr)

    names = prims()
    assert "scan" not in names and not any(map(_is_remat, names))

    model.set_execution(remat="full")
    names = prims()
    assert "scan" not in names and sum(map(_is_remat, names)) == n_text + n_vision

    model.set_execution(scan_layers=True)  # remat stays "full"
    names = prims()
    assert names.count("scan") == 1 and sum(map(_is_remat, names)) == 1 + n_vision  # one body inside the scan

    model.set_execution(remat="none")
    names = prims()
    assert names.count("scan") == 1 and not any(map(_is_remat, names))
    g, p = nnx.split(model)
    assert _max_diff(logits_jit(p, g, BATCH), ref_logits) <= TOL

    model.set_execution(scan_layers=False)
    assert nnx.graphdef(model) == graphdef


def test_cache_path_stays_plain(plain):
    """The KV-cache (prefill / decode) path ignores the switches; only the vision blocks are rematerialised."""
    graphdef, params, ref_logits, _ = plain
    model = nnx.merge(graphdef, params)
    model.set_execution(remat="full", scan_layers=True)
    g = nnx.graphdef(model)
    ids, mask, t = BATCH["input_ids"], BATCH["attention_mask"], BATCH["input_ids"].shape[1]
    tc = CFG.text
    shape = (ids.shape[0], t, tc.num_key_value_heads, tc.head_dim)
    cache = [LayerCache(jnp.zeros(shape), jnp.zeros(shape)) for _ in range(tc.num_hidden_layers)]

    def prefill(params: nnx.State, cache: list[LayerCache]) -> jax.Array:
        m = nnx.merge(g, params)
        embeds = m.embed(ids, BATCH["pixel_values"], BATCH["vision_meta"])
        return m.decode(embeds, BATCH["position_ids"], causal_mask(mask, t, t), cache, jnp.int32(0))[0]

    names = _primitives(jax.make_jaxpr(prefill)(params, cache).jaxpr)
    assert "scan" not in names and sum(map(_is_remat, names)) == CFG.vision.depth
    assert _max_diff(jax.jit(prefill)(params, cache), ref_logits) <= TOL


def test_remat_policy_names():
    assert remat_policy("none") is None
    assert remat_policy("full") is jax.checkpoint_policies.nothing_saveable
    for name in REMAT_POLICIES[2:]:  # each other name is the jax policy of that name
        assert remat_policy(name) is getattr(jax.checkpoint_policies, name)


def test_bad_remat_name_raises(plain):
    with pytest.raises(ValueError, match="'nope'") as info:
        Qwen25VL(CFG, rngs=nnx.Rngs(0), remat="nope")
    assert all(name in str(info.value) for name in REMAT_POLICIES)
    model = nnx.merge(*plain[:2])
    with pytest.raises(ValueError, match="nope"):
        model.set_execution(remat="nope")
    assert model.visual.remat == "none" and model.language_model.remat == "none"
