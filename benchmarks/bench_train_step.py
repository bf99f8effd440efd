"""Time the sharded SFT train step: step time, tokens/s and MFU for several execution settings in one run.

    python benchmarks/bench_train_step.py --model qwen2_5_vl_3b --seq 2048 --image 1024x768 --batch 8   # a GPU
    python benchmarks/bench_train_step.py --model tiny --seq 256 --image 112x112 --batch 2              # CPU smoke

Random weights of the named preset, bf16 compute with fp32 master weights (`--dtype`), AdamW, FSDP over every
device. Every sample is one image of `--image` pixels (W x H) plus text up to `--seq` tokens, all labels
counted. Each setting (remat policy x scan over layers) is compiled, warmed up, then timed over `--steps` steps;
the table gives the median step time, tokens/s, the MFU from the config's training FLOPs (forward + backward:
`train.flops.train_step_flops`, the same count as the SFT loop's `mfu` metric) against the device's bf16 peak
where known (`train.flops.device_peak_flops`), and each setting's speed relative to the first row (the baseline
measured in the same run).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def build_batch(config: Any, batch: int, seq: int, width: int, height: int, seed: int = 0) -> dict:
    from zoomiqa_jax.processing.image import smart_resize
    from zoomiqa_jax.train.sft_data import add_model_inputs

    h, w = smart_resize(height, width)
    grid = np.asarray([[1, h // 14, w // 14]] * batch, np.int64)
    n_img = int(grid[0].prod() // config.vision.merge_unit)
    if n_img + 16 > seq:
        raise SystemExit(f"--seq {seq} cannot hold an image of {n_img} tokens plus text")
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, config.text.vocab_size - 14, size=(batch, seq)).astype(np.int32)
    ids[:, 4] = config.vision_start_token_id
    ids[:, 5:5 + n_img] = config.image_token_id
    ids[:, 5 + n_img] = config.vision_end_token_id
    patches = int(grid[:, 1:].prod(-1).sum())
    out = {"input_ids": ids, "attention_mask": np.ones_like(ids), "labels": ids.copy(),
           "pixel_values": rng.standard_normal((patches, 3 * 2 * 14 * 14)).astype(np.float32),
           "image_grid_thw": grid}
    out = add_model_inputs(out, config, (256, 1024, 4096, 16384, 65536))
    return {k: out[k] for k in ("input_ids", "attention_mask", "labels", "pixel_values", "position_ids",
                                "vision_meta")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="qwen2_5_vl_3b", help="preset: tiny, qwen2_5_vl_3b, qwen2_5_vl_7b")
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--image", default="1024x768", help="W x H of the one image per sample")
    p.add_argument("--batch", type=int, default=8, help="samples per step (global)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--settings", default="none/0,dots_with_no_batch_dims_saveable/0,full/0,full/1",
                   help="comma-separated remat/scan pairs; the first is the baseline")
    args = p.parse_args()

    from zoomiqa_jax.config import ModelConfig
    from zoomiqa_jax.model import Qwen25VL
    from zoomiqa_jax.parallel.mesh import make_mesh
    from zoomiqa_jax.parallel.rules import state_shardings
    from zoomiqa_jax.train.config import OptimSection
    from zoomiqa_jax.train.flops import device_peak_flops, mfu, train_step_flops
    from zoomiqa_jax.train.optim import make_optimizer
    from zoomiqa_jax.train.sft import make_sft_step
    from zoomiqa_jax.train.sft_loop import to_global
    from zoomiqa_jax.train.step import batch_shardings

    config = getattr(ModelConfig, args.model)()
    width, height = (int(v) for v in args.image.lower().split("x"))
    batch_np = build_batch(config, args.batch, args.seq, width, height)
    mesh = make_mesh((1, -1, 1))
    tokens = args.batch * args.seq
    flops = train_step_flops(config, batch_np)  # forward + backward already; one attention group per image
    peak = device_peak_flops()
    tx, _ = make_optimizer(OptimSection(lr=1e-5, grad_accum=1), 1000)
    rows = []
    for setting in args.settings.split(","):
        remat, scan = setting.split("/")
        model = Qwen25VL(config, rngs=nnx.Rngs(0), dtype=jnp.dtype(args.dtype), param_dtype=jnp.float32,
                         remat=remat, scan_layers=scan == "1")
        graphdef, params = nnx.split(model, nnx.Param)
        params = jax.device_put(params, state_shardings(params, mesh))
        del model
        init, step = make_sft_step(graphdef, params, tx, mesh=mesh, batch_example=batch_np)
        opt_state = init(params)
        batch = to_global(batch_np, batch_shardings(batch_np, mesh))
        t0 = time.perf_counter()
        params, opt_state, m = step(params, opt_state, batch)
        jax.block_until_ready(m)
        compile_s = time.perf_counter() - t0
        times = []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            params, opt_state, m = step(params, opt_state, batch)
            jax.block_until_ready(m)
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        rows.append((setting, compile_s, med, tokens / med, None if peak is None else mfu(flops, med, peak, mesh.size)))
        del params, opt_state

    print(f"{args.model}, batch {args.batch} x seq {args.seq}, one {width}x{height} image per sample, "
          f"{args.dtype}, {mesh.size} x {jax.devices()[0].device_kind}, {flops / 1e12:.2f} TFLOP per step")
    print("| remat/scan | compile s | step s (median) | tokens/s | MFU | speed vs first |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for setting, comp, med, tps, util in rows:
        mfu = "n/a" if util is None else f"{util:.1%}"
        print(f"| {setting} | {comp:.1f} | {med:.3f} | {tps:,.0f} | {mfu} | {rows[0][2] / med:.2f}x |")


if __name__ == "__main__":
    main()
