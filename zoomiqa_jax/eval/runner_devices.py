"""Data-parallel sampling for `zoomiqa eval`: one round's rows split over all local devices.

`DataParallelGenerate` is a `generate_fn` (the signature of `zoomiqa_jax.inference.engine.generate`) for
`run_zoomiqa` / `run_single_turn`. It places the parameters once, replicated over a (data=N, fsdp=1,
tensor=1) mesh (`zoomiqa_jax.parallel.make_mesh`), and keeps per device a model whose arrays are that
device's shard of the replicated arrays (no copy). Each round:

1. drops the one-token dummy rows that `sample_round` pads the batch with (a real prompt is never one token);
2. splits the m real rows into contiguous chunks of c = ceil(m / N) rows (the last one padded with dummy
   rows, so every device runs the same shapes: the rows run are a multiple of the devices used);
3. gives each chunk its own rows' image patches (a row's images are counted by its <|vision_start|> tokens,
   an image's patches are t * h * w of its grid) and its rows' PRNG keys, and runs `engine.generate` for all
   chunks at once, one thread per device (each call blocks on its own device only);
4. returns the rows in order, dummy rows filled with the pad token, log-prob 0, length 0.

Every row draws its randomness from its own key and prompts are padded to the same buckets, so a row's
tokens do not depend on which device ran it: greedy decoding gives the single-device tokens.

Why not one SPMD program: `engine.generate` takes host arrays (np.asarray of every input, jnp.asarray to the
default device) and concatenates all rows' image patches into one [patches, dim] array, so a NamedSharding
on the inputs cannot reach `_generate_program`, and with replicated parameters GSPMD would replicate the whole
computation. One SPMD program needs, in `engine.generate`: an optional `mesh`; the per-row inputs (ids, mask,
position_ids, next_pos, row_keys) placed with `NamedSharding(mesh, P("data"))` instead of jnp.asarray, the
state with `state_shardings`, and in `_generate_program` a `with_sharding_constraint` of the embeddings, the KV
cache, tokens / logprobs / lengths to P("data") on the batch dim (the vision encoder over the concatenated
patches can stay replicated, or take patches grouped per shard and a per-shard VisionMeta).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from zoomiqa_jax.inference import engine
from zoomiqa_jax.inference.engine import GenerateOutput
from zoomiqa_jax.parallel import make_mesh


class DataParallelGenerate:
    """A `generate_fn` running each round's rows data-parallel over `devices` (default: all local devices)."""

    def __init__(self, model: Any, devices: Sequence[jax.Device] | None = None) -> None:
        self.devices = list(jax.local_devices() if devices is None else devices)
        self.mesh = make_mesh((len(self.devices), 1, 1), devices=self.devices)
        graphdef, state = nnx.split(model)
        replicated = jax.device_put(state, NamedSharding(self.mesh, PartitionSpec()))
        self.replicas = [nnx.merge(graphdef, jax.tree.map(lambda a, d=d: _shard_on(a, d), replicated))
                         for d in self.devices]
        self.config = model.config
        self.pool = ThreadPoolExecutor(len(self.devices), thread_name_prefix="zoomiqa-dp")
        self.last_devices_used = 0  # how many devices the last call ran on (for tests and logs)

    def __call__(
        self, model: Any, input_ids: Any, attention_mask: Any | None = None, pixel_values: Any | None = None,
        image_grid_thw: Any | None = None, *, max_new_tokens: int, row_keys: jax.Array | None = None,
        pad_token_id: int | None = None, **kwargs: Any,
    ) -> GenerateOutput:
        """`engine.generate` over the local devices (`model` is ignored: the replicas of the constructor's
        model run). Needs `row_keys` ([rows] keys) so that a row's randomness does not depend on its device."""
        if kwargs.get("group", 1) != 1:
            raise ValueError(f"DataParallelGenerate: group must be 1, found {kwargs['group']}")
        if row_keys is None:
            raise ValueError("DataParallelGenerate: row_keys is required (one PRNG key per row)")
        ids = np.asarray(input_ids)
        mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask)
        rows = len(ids)
        real = [r for r in range(rows) if mask[r].sum() > 1]
        pad = self.config.bos_token_id if pad_token_id is None else pad_token_id
        tokens = np.full((rows, max_new_tokens), pad, np.int32)
        logps = np.zeros((rows, max_new_tokens), np.float32)
        lengths = np.zeros((rows,), np.int32)
        if not real:
            return GenerateOutput(tokens, logps, lengths)
        per_row = _patches_per_row(ids, image_grid_thw, self.config.vision_start_token_id)
        starts = np.concatenate([[0], np.cumsum([p for p, _ in per_row])])
        image_starts = np.concatenate([[0], np.cumsum([k for _, k in per_row])])
        grids = None if image_grid_thw is None else np.asarray(image_grid_thw).reshape(-1, 3)
        pixels = None if pixel_values is None else np.asarray(pixel_values)
        chunk = -(-len(real) // len(self.devices))
        jobs = []
        for d, first in enumerate(range(0, len(real), chunk)):
            mine = real[first:first + chunk]
            c_ids, c_mask = ids[mine], mask[mine]
            dummies = chunk - len(mine)
            if dummies:
                c_ids = np.concatenate([c_ids, np.full((dummies, ids.shape[1]), pad, ids.dtype)])
                c_mask = np.concatenate([c_mask, np.zeros((dummies, ids.shape[1]), mask.dtype)])
                c_mask[len(mine):, -1] = 1
            keys = row_keys[np.asarray(mine + [mine[-1]] * dummies)]
            c_pixels = c_grids = None
            if grids is not None and any(per_row[r][1] for r in mine):
                c_pixels = np.concatenate([pixels[starts[r]:starts[r + 1]] for r in mine])
                c_grids = np.concatenate([grids[image_starts[r]:image_starts[r + 1]] for r in mine])
            jobs.append((mine, self.pool.submit(
                engine.generate, self.replicas[d], c_ids, c_mask, c_pixels, c_grids, max_new_tokens=max_new_tokens,
                row_keys=keys, pad_token_id=pad_token_id, **kwargs)))
        self.last_devices_used = len(jobs)
        for mine, job in jobs:
            out = job.result()
            n = len(mine)
            tokens[mine], logps[mine], lengths[mine] = out.tokens[:n], out.logprobs[:n], out.lengths[:n]
        return GenerateOutput(tokens, logps, lengths)


def _shard_on(array: Any, device: jax.Device) -> Any:
    """The buffer of a replicated array on `device` (a single-device array, no copy); non-arrays as they are."""
    if not isinstance(array, jax.Array):
        return array
    for shard in array.addressable_shards:
        if shard.device == device:
            return shard.data
    raise ValueError(f"replicated parameter has no shard on {device}")


def _patches_per_row(ids: np.ndarray, grids: Any | None, vision_start: int) -> list[tuple[int, int]]:
    """(patch count, image count) per row: images in prompt order, counted by <|vision_start|> tokens."""
    counts = [int((row == vision_start).sum()) for row in ids]
    if grids is None:
        if any(counts):
            raise ValueError("DataParallelGenerate: prompts hold <|vision_start|> tokens but image_grid_thw is None")
        return [(0, 0)] * len(ids)
    grid = np.asarray(grids).reshape(-1, 3)
    if sum(counts) != len(grid):
        raise ValueError(f"DataParallelGenerate: {sum(counts)} <|vision_start|> tokens in input_ids but "
                         f"{len(grid)} rows in image_grid_thw")
    sizes = grid.prod(-1).astype(int)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    return [(int(sizes[bounds[r]:bounds[r + 1]].sum()), counts[r]) for r in range(len(ids))]


def data_parallel_generate(model: Any) -> DataParallelGenerate | None:
    """A DataParallelGenerate over the local devices when there are several, else None (engine.generate)."""
    return DataParallelGenerate(model) if jax.local_device_count() > 1 else None
