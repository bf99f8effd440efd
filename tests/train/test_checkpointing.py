"""Training checkpoints: bit-exact round trip of every item, keep-N pruning, resume picks the latest, sharded
restore targets, and the run directory reads with load_orbax."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import yaml
from flax import nnx

from zoomiqa_jax.checkpoint.orbax_io import load_orbax
from zoomiqa_jax.config import ModelConfig
from zoomiqa_jax.model import Qwen25VL
from zoomiqa_jax.train.checkpointing import CheckpointError, TrainCheckpointer, abstract_like, write_model_metadata
from zoomiqa_jax.train.config import OptimSection, TrainConfig
from zoomiqa_jax.train.optim import make_optimizer


class Tiny(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.lin = nnx.Linear(4, 3, rngs=rngs, param_dtype=jnp.float32)
        self.norm = nnx.RMSNorm(3, rngs=rngs, param_dtype=jnp.bfloat16)


def _state(seed=0, steps=1):
    params = nnx.state(Tiny(nnx.Rngs(seed)), nnx.Param)
    tx, _ = make_optimizer(OptimSection(grad_accum=2, weight_decay=0.1, lr=1e-2, warmup_ratio=0.0), 10)
    opt_state = tx.init(params)
    for i in range(steps):
        grads = jax.tree.map(lambda p, i=i: jnp.full(p.shape, 0.1 * (i + 1), p.dtype), params)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
    return params, opt_state


def _assert_tree_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("async_save", [True, False])
def test_round_trip_is_bit_exact_for_every_item(tmp_path, async_save):
    params, opt_state = _state(steps=3)
    rng = jax.random.key(42)
    cfg = TrainConfig()
    with TrainCheckpointer(tmp_path / "ckpt", save_every=1, keep=2, async_save=async_save) as ckpt:
        assert ckpt.save(7, params=params, opt_state=opt_state, rng=rng, data_state={"epoch": 1, "pos": [3, 4]},
                         config=cfg)
        ckpt.wait()
        out = ckpt.restore(params=params, opt_state=opt_state)
    assert out.step == 7
    _assert_tree_equal(out.params, params)
    _assert_tree_equal(out.opt_state, opt_state)
    assert isinstance(out.params, nnx.State)
    np.testing.assert_array_equal(jax.random.key_data(out.rng), jax.random.key_data(rng))
    np.testing.assert_array_equal(jax.random.normal(out.rng, (3,)), jax.random.normal(rng, (3,)))
    assert out.data_state == {"epoch": 1, "pos": [3, 4]}
    # the run config lies beside the checkpoint as plain YAML
    text = (tmp_path / "ckpt" / "7" / "config" / "config.yaml").read_text()
    assert text == out.config_yaml and yaml.safe_load(text)["optim"]["lr"] == cfg.optim.lr


def test_bytes_data_state_and_raw_uint32_rng(tmp_path):
    params, opt_state = _state()
    raw = jax.random.PRNGKey(3)
    blob = b"\x00grain-iterator-state\xff"
    with TrainCheckpointer(tmp_path, save_every=1, async_save=False) as ckpt:
        ckpt.save(1, params=params, opt_state=opt_state, rng=raw, data_state=blob)
        out = ckpt.restore(params=params, opt_state=opt_state)
    assert out.data_state == blob
    np.testing.assert_array_equal(out.rng, raw)


def test_keep_n_pruning_and_resume_picks_latest(tmp_path):
    states = {s: _state(seed=s) for s in range(1, 6)}
    with TrainCheckpointer(tmp_path, save_every=2, keep=2, async_save=True) as ckpt:
        saved = [ckpt.save(s, params=p, opt_state=o, data_state={"s": s}) for s, (p, o) in states.items()]
        assert saved == [False, True, False, True, False]  # only multiples of save_every
        assert ckpt.save(5, params=states[5][0], opt_state=states[5][1], data_state={"s": 5}, force=True)
        ckpt.wait()
        assert ckpt.all_steps() == [4, 5]  # step 2 pruned
    # a save killed half way leaves only orbax's temporary directory, which no reader takes for a step
    partial = tmp_path / "6.orbax-checkpoint-tmp-1700000000"
    (partial / "params").mkdir(parents=True)
    # a fresh manager (a resumed process) sees the same and restores the latest complete step
    with TrainCheckpointer(tmp_path, save_every=2, keep=2) as ckpt:
        assert ckpt.all_steps() == [4, 5]
        assert ckpt.latest_step() == 5
        out = ckpt.restore(params=states[1][0], opt_state=states[1][1])
        assert out.step == 5 and out.data_state == {"s": 5}
        assert not ckpt.save(4, params=states[5][0], opt_state=states[5][1], force=True)  # saved already: kept
        _assert_tree_equal(out.params, states[5][0])
        older = ckpt.restore(params=states[1][0], opt_state=states[1][1], step=4)
        _assert_tree_equal(older.params, states[4][0])
        with pytest.raises(CheckpointError, match="no step 2"):
            ckpt.restore(params=states[1][0], opt_state=states[1][1], step=2)
        wrong = {"lin": {"kernel": jnp.zeros((9, 9))}}
        with pytest.raises(CheckpointError, match=f"{tmp_path}/5: does not match"):
            ckpt.restore(params=wrong, opt_state=states[1][1])


def test_restore_without_checkpoint_names_the_directory(tmp_path):
    params, opt_state = _state()
    with TrainCheckpointer(tmp_path / "empty") as ckpt, pytest.raises(CheckpointError, match="empty"):
        ckpt.restore(params=params, opt_state=opt_state)


def test_restore_into_abstract_sharded_targets(tmp_path):
    params, opt_state = _state(steps=2)
    device = jax.devices()[0]
    sharding = jax.sharding.SingleDeviceSharding(device)
    with TrainCheckpointer(tmp_path, save_every=1, async_save=False) as ckpt:
        ckpt.save(1, params=params, opt_state=opt_state, rng=jax.random.key(0))
        target_p = abstract_like(params, sharding)
        target_o = abstract_like(opt_state, jax.tree.map(lambda _: sharding, opt_state))
        assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(target_p))
        out = ckpt.restore(params=target_p, opt_state=target_o)
    for leaf in jax.tree.leaves(out.params) + jax.tree.leaves(out.opt_state):
        assert isinstance(leaf, jax.Array) and leaf.sharding == sharding
    _assert_tree_equal(out.params, params)
    _assert_tree_equal(out.opt_state, opt_state)


def test_run_directory_reads_with_load_orbax(tmp_path):
    config = ModelConfig.tiny()
    model = Qwen25VL(config, rngs=nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    write_model_metadata(tmp_path, config)
    with TrainCheckpointer(tmp_path, save_every=1, async_save=False) as ckpt:
        ckpt.save(3, params=params, opt_state={"count": jnp.zeros([], jnp.int32)}, force=True)
    loaded, loaded_config = load_orbax(tmp_path)
    assert loaded_config == config
    _assert_tree_equal(nnx.to_pure_dict(nnx.state(loaded, nnx.Param)), nnx.to_pure_dict(params))
