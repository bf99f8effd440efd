"""Abstract (shape-only) model state and batches for AOT compilation: nothing the size of the model is allocated.

The model state comes from `nnx.eval_shape` of the constructor with the config's dtypes and the `parallel.remat` /
`parallel.scan_layers` switches; the batches are the largest ones a run builds, laid out as the training code lays
them out (the batch dicts of `train.sft_loop.make_batch` and `train.rollout.build_rollout_batch`, the inputs of
`inference.engine._generate_program`). Each row holds `images_per_row` images of `image_hw` pixels (default: a
square image resized to `data.max_pixels` by `smart_resize`, as the processor resizes a large photo) and is filled
to the largest sequence bucket; `position_ids` and `vision_meta` are computed by the training code's own
`train.sft_data.add_model_inputs` on that token layout (host NumPy index arrays, a few MB at most).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from zoomiqa_jax.config import ConfigError, ModelConfig
from zoomiqa_jax.inference.engine import Buckets
from zoomiqa_jax.model import Qwen25VL
from zoomiqa_jax.processing.image import smart_resize
from zoomiqa_jax.train.config import TrainConfig


def abstract_model(cfg: TrainConfig) -> tuple[Qwen25VL, ModelConfig]:
    """The model of `cfg.model` as ShapeDtypeStructs (shapes from model.config; model.weights is not read), with
    the parallel.* execution switches set."""
    config = cfg.model.resolve()
    dtype, param_dtype = jnp.dtype(cfg.model.dtype), jnp.dtype(cfg.model.param_dtype)
    model = nnx.eval_shape(lambda: Qwen25VL(config, rngs=nnx.Rngs(cfg.run.seed), dtype=dtype, param_dtype=param_dtype))
    model.set_execution(remat=cfg.parallel.remat, scan_layers=cfg.parallel.scan_layers)
    return model, config


def image_grid(config: ModelConfig, max_pixels: int, image_hw: tuple[int, int] | None = None) -> tuple[int, int, int]:
    """The (t, h, w) patch grid of one image: `image_hw` (height, width) resized by `smart_resize`, or by default
    the largest square image `data.max_pixels` allows."""
    v = config.vision
    factor = v.patch_size * v.spatial_merge_size
    hw = image_hw or (1 << 14, 1 << 14)
    h, w = smart_resize(hw[0], hw[1], factor=factor, max_pixels=max_pixels)
    return 1, h // v.patch_size, w // v.patch_size


def image_rows(config: ModelConfig, rows: int, seq: int, grids: Sequence[tuple[int, int, int]], key: str
               ) -> tuple[np.ndarray, np.ndarray]:
    """Token ids [rows, seq] with the images of `grids` in every row (<|vision_start|>, one <|image_pad|> per
    merged token, <|vision_end|>), the rest text, and the grids of all rows [rows * len(grids), 3]. `key` names the
    config key to change when the images do not fit."""
    unit = config.vision.merge_unit
    layout: list[int] = []
    for t, h, w in grids:
        layout += [config.vision_start_token_id] + [config.image_token_id] * (t * h * w // unit)
        layout += [config.vision_end_token_id]
    if len(layout) >= seq:
        raise ConfigError(f"{key}: {len(grids)} image(s) of grid {list(grids[0])} take {len(layout)} tokens, "
                          f"more than the largest sequence bucket {seq}; raise {key} or lower data.max_pixels")
    row = np.full(seq, config.bos_token_id, np.int32)
    row[1:1 + len(layout)] = layout
    ids = np.tile(row, (rows, 1))
    return ids, np.asarray([g for _ in range(rows) for g in grids], np.int64)


def abstract(tree: Any) -> Any:
    """Host arrays -> ShapeDtypeStructs with jax's canonical dtypes (int64 -> int32 without x64), as
    `jax.make_array_from_callback` would hold them. VisionMeta's static full_chunk is kept."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), jax.dtypes.canonicalize_dtype(x.dtype)), tree)


def model_batch(config: ModelConfig, rows: int, seq: int, grids: Sequence[tuple[int, int, int]],
                patch_buckets: Sequence[int], key: str) -> dict[str, Any]:
    """A right-filled batch with `input_ids`, `attention_mask`, `labels`, `pixel_values` (padded to a patch
    bucket, `Buckets.pick`), `position_ids` and `vision_meta`, via `train.sft_data.add_model_inputs`; host
    arrays except pixel_values, a zero-stride view (no memory)."""
    from zoomiqa_jax.train.sft_data import add_model_inputs

    ids, grid = image_rows(config, rows, seq, grids, key)
    patches = Buckets.pick(int(grid.prod(-1).sum()), patch_buckets)
    batch = {"input_ids": ids, "attention_mask": np.ones_like(ids), "labels": ids.copy(),
             "pixel_values": np.broadcast_to(np.float32(0), (patches, config.vision.patch_dim)),
             "image_grid_thw": grid}
    return add_model_inputs(batch, config, patch_buckets)


def sft_batch(cfg: TrainConfig, config: ModelConfig, images_per_row: int, image_hw: tuple[int, int] | None = None
              ) -> dict[str, Any]:
    """The largest SFT micro-batch of `cfg` (abstract): `data.batch_size` rows of the largest sequence bucket."""
    from zoomiqa_jax.train.sft_loop import MODEL_KEYS, PATCH_BUCKETS

    grid = image_grid(config, cfg.data.max_pixels, image_hw)
    batch = model_batch(config, cfg.data.batch_size, max(cfg.data.seq_buckets), [grid] * images_per_row,
                        PATCH_BUCKETS, "data.seq_buckets")
    return abstract({k: batch[k] for k in MODEL_KEYS})


def grpo_seq_buckets(cfg: Any) -> tuple[int, ...]:
    """The training-row lengths of a GRPO run: rollout.seq_buckets, or the sums prompt + new-token bucket
    (as `train.grpo_loop.run_grpo` derives them)."""
    ro = cfg.rollout
    return tuple(ro.seq_buckets) or tuple(sorted({*ro.prompt_buckets,
                                                  *(a + b for a in ro.prompt_buckets for b in ro.new_token_buckets)}))


def grpo_batch(cfg: Any, config: ModelConfig, images_per_row: int, image_hw: tuple[int, int] | None = None
               ) -> dict[str, Any]:
    """A GRPO mini-batch of `cfg` (abstract, before the pi_old entries): batch_size / mini_batches x
    group_size rows of the largest training-row bucket, with the rollout batch's loss inputs (the host-only
    entries `train.grpo_loop.HOST_ONLY` dropped, as the loop drops them). That is a step where no sample crops:
    the rollout batch has one row per round, padded to 1.25, 1.5 or 2 x these rows as more samples crop
    (`train.rollout.row_bucket`), and its activations grow with the rows."""
    g = cfg.grpo
    rows = cfg.data.batch_size // g.mini_batches * g.group_size
    seq = max(grpo_seq_buckets(cfg))
    grid = image_grid(config, cfg.data.max_pixels, image_hw)
    batch = model_batch(config, rows, seq, [grid] * images_per_row, tuple(cfg.rollout.patch_buckets),
                        "rollout.seq_buckets")
    out = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values", "position_ids", "vision_meta")}
    out.update(loss_mask=batch["attention_mask"], candidate_mask=batch["attention_mask"],
               logit_positions=np.zeros((rows, g.candidate_slots), np.int32), advantages=np.zeros(rows, np.float32),
               seq_tokens=np.zeros(rows, np.int32))
    if g.ref_kl_beta > 0:
        out["ref_logp"] = np.zeros((rows, seq), np.float32)
    return abstract(out)


def generate_args(cfg: Any, config: ModelConfig, image_hw: tuple[int, int] | None = None) -> dict[str, Any]:
    """The stage-1 rollout call of `inference.engine._generate_program` (abstract): `data.batch_size` prompts of
    the largest prompt bucket with one image each, prefilled once and sampled `grpo.group_size` times, for the
    new-token bucket of rollout.max_new_tokens. Returns the traced arguments by name and the static ones
    under "static"."""
    ro, rows, group = cfg.rollout, cfg.data.batch_size, cfg.grpo.group_size
    grid = image_grid(config, cfg.data.max_pixels, image_hw)
    # the engine pads patches and vision metadata by the same rule as training (Buckets.pick, full_chunk), over
    # the patch buckets `grpo_loop.sampling_settings` leaves at the engine's defaults
    batch = model_batch(config, rows, max(ro.prompt_buckets), [grid], Buckets().patch_counts,
                        "rollout.prompt_buckets")
    keys = jax.eval_shape(lambda: jax.random.split(jax.random.key(0), rows * group))
    host = abstract({"ids": batch["input_ids"], "mask": batch["attention_mask"], "pixels": batch["pixel_values"],
                     "meta": batch["vision_meta"], "position_ids": batch["position_ids"],
                     "next_pos": np.zeros(rows, np.int32)})
    scalar = lambda dtype: jax.ShapeDtypeStruct((), dtype)
    return dict(host, row_keys=keys,
                eos_ids=jax.ShapeDtypeStruct((2,), jnp.int32), pad_id=scalar(jnp.int32), limit=scalar(jnp.int32),
                temperature=scalar(jnp.float32), top_p=scalar(jnp.float32),
                static=dict(top_k=int(ro.top_k), max_new=Buckets.pick(ro.max_new_tokens, ro.new_token_buckets),
                            greedy=ro.temperature <= 0.0, group=group))
