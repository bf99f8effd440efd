"""One forward of a small Qwen2.5-VL (text 512 wide x 4 layers, vision 256 wide x depth 4, one 448x448 image):
our jitted Flax model vs transformers' PyTorch model, same weights, same inputs, same machine, same run.

    python benchmarks/bench_forward.py [--repeats 20] [--dtype float32|bfloat16] [--threads N]

Prints a table with median / min wall time per forward and the ratio transformers / ours (> 1: ours faster).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def bench_config():
    from zoomiqa_jax.config import ModelConfig, TextConfig, VisionConfig

    return ModelConfig(
        vision=VisionConfig(depth=4, hidden_size=256, intermediate_size=688, num_heads=4, out_hidden_size=512,
                            fullatt_block_indexes=(3,)),
        text=TextConfig(vocab_size=151936, hidden_size=512, intermediate_size=1376, num_hidden_layers=4,
                        num_attention_heads=8, num_key_value_heads=2, mrope_section=(8, 12, 12)),
        tie_word_embeddings=True,
    )


def interleaved(fns: list, repeats: int) -> list[list[float]]:
    """Time each fn `repeats` times, alternating between them so that load drift hits all alike."""
    for fn in fns:
        fn()  # warm-up (compilation for ours)
    out: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            out[i].append(time.perf_counter() - t0)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=20, help="timed forwards per implementation")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch intra-op threads")
    args = ap.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    from flax import nnx

    from tests.reference import hf_logits, image_prompt, left_pad, make_hf_model, ours_from_hf
    from zoomiqa_jax.model import prepare_inputs
    from zoomiqa_jax.processing.image import preprocess_images

    torch.set_num_threads(args.threads)
    cfg = bench_config()
    hf = make_hf_model(cfg, seed=0)
    ours = ours_from_hf(hf, cfg)
    img = (np.random.default_rng(0).random((448, 448, 3)) * 255).astype(np.uint8)
    pixels, grid = preprocess_images([img])
    ids, mask = left_pad([image_prompt(cfg, [tuple(g) for g in grid], list(range(20, 40)))])
    prep = prepare_inputs(cfg, ids, mask, grid)

    @nnx.jit
    def forward(model, ids, mask, pixels, position_ids, meta):
        return model(ids, mask, pixels, position_ids=position_ids, vision_meta=meta)

    j_args = (jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(pixels), jnp.asarray(prep["position_ids"]),
              jax.tree.map(jnp.asarray, prep["vision_meta"]))
    ours_fn = lambda: forward(ours, *j_args).block_until_ready()
    hf_fn = lambda: hf_logits(hf, cfg, ids, mask, pixels, grid)
    diff = float(np.abs(np.asarray(forward(ours, *j_args)) - hf_fn()).max())
    t_ours, t_hf = interleaved([ours_fn, hf_fn], args.repeats)

    print(f"# forward benchmark: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"jax {jax.__version__} ({jax.default_backend()}), torch {torch.__version__}, "
          f"seq {ids.shape[1]} tokens, {pixels.shape[0]} patches, float32, max-abs-diff {diff:.2e}")
    print("| implementation | median ms | min ms |")
    print("| --- | ---: | ---: |")
    print(f"| transformers (PyTorch, eager attention) | {1e3 * statistics.median(t_hf):.1f} | {1e3 * min(t_hf):.1f} |")
    print(f"| zoomiqa-jax (jax.jit) | {1e3 * statistics.median(t_ours):.1f} | {1e3 * min(t_ours):.1f} |")
    print(f"| ratio transformers / ours | {statistics.median(t_hf) / statistics.median(t_ours):.2f}x | |")


if __name__ == "__main__":
    main()
