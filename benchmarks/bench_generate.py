"""Sampling throughput: our jitted KV-cache sampler vs transformers `generate`, same weights, same prompts, same
run; and the gain of sharing one prefill across a GRPO group.

    python benchmarks/bench_generate.py [--batch 8] [--new-tokens 64] [--group 8] [--repeats 3]

Model: the small config of bench_forward.py (text 512 wide x 4 layers, vision 256 wide x depth 4), one 448x448
image per prompt. Sampling: temperature 1.0, top-p 0.95, top-k 50, exactly --new-tokens per row (no early stop).
Tokens/s counts generated tokens over wall time including prefill and image encoding; our compile time is
reported separately (it is paid once per bucket).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8, help="prompts per generate call")
    ap.add_argument("--new-tokens", type=int, default=64, help="tokens generated per row")
    ap.add_argument("--group", type=int, default=8, help="samples per prompt for the prefix-sharing comparison")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median reported)")
    args = ap.parse_args(argv)

    import jax
    import numpy as np
    import torch

    from benchmarks.bench_forward import bench_config
    from tests.reference import image_prompt, left_pad, make_hf_model, ours_from_hf
    from zoomiqa_jax.inference import generate
    from zoomiqa_jax.processing.image import preprocess_images

    torch.set_num_threads(os.cpu_count())
    cfg = bench_config()
    hf = make_hf_model(cfg, seed=0)
    ours = ours_from_hf(hf, cfg)
    rng = np.random.default_rng(0)
    images = [(rng.random((448, 448, 3)) * 255).astype(np.uint8) for _ in range(args.batch)]
    pixels, grids = preprocess_images(images)
    rows = [image_prompt(cfg, [tuple(g)], list(range(20, 40 + i))) for i, g in enumerate(grids)]
    ids, mask = left_pad(rows)
    n = args.new_tokens
    sampling = dict(temperature=1.0, top_p=0.95, top_k=50)

    def ours_batch():
        return generate(ours, ids, mask, pixels, grids, max_new_tokens=n, eos_token_ids=[], rng=jax.random.key(0),
                        **sampling)

    def hf_batch():
        with torch.no_grad():
            return hf.generate(
                input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                pixel_values=torch.from_numpy(pixels), image_grid_thw=torch.from_numpy(grids),
                mm_token_type_ids=torch.from_numpy((ids == cfg.image_token_id).astype(np.int64)),
                do_sample=True, max_new_tokens=n, min_new_tokens=n, pad_token_id=0, **sampling)

    t0 = time.perf_counter()
    out = ours_batch()
    compile_s = time.perf_counter() - t0
    assert (out.lengths == n).all()
    t_ours = best_of(ours_batch, args.repeats)
    t_hf = best_of(hf_batch, args.repeats)

    # prefix sharing: one prompt sampled G times, shared prefill vs G copies of the prompt
    g = args.group
    p0 = pixels[: int(np.prod(grids[0]))]
    one_ids, one_mask = ids[:1], mask[:1]

    def shared():
        return generate(ours, one_ids, one_mask, p0, grids[:1], max_new_tokens=n, eos_token_ids=[], group=g,
                        rng=jax.random.key(1), **sampling)

    def copies():
        return generate(ours, np.repeat(one_ids, g, 0), np.repeat(one_mask, g, 0), np.concatenate([p0] * g),
                        np.repeat(grids[:1], g, 0), max_new_tokens=n, eos_token_ids=[], rng=jax.random.key(1),
                        **sampling)

    shared(), copies()  # compile both
    t_shared, t_copies = best_of(shared, args.repeats), best_of(copies, args.repeats)

    tok = args.batch * n
    print(f"# generate benchmark: {os.cpu_count()} cores, jax {jax.__version__} ({jax.default_backend()}), "
          f"torch {torch.__version__}; batch {args.batch}, {n} new tokens, prompt {ids.shape[1]} tokens "
          f"({int(np.prod(grids[0])) // 4} image tokens each), float32")
    print("| sampler | wall s | tokens/s |")
    print("| --- | ---: | ---: |")
    print(f"| transformers generate (PyTorch) | {t_hf:.2f} | {tok / t_hf:.0f} |")
    print(f"| zoomiqa-jax generate (jit, KV cache) | {t_ours:.2f} | {tok / t_ours:.0f} |")
    print(f"| speed-up ours / transformers | {t_hf / t_ours:.2f}x | |")
    print(f"| our first call (compile + run) | {compile_s:.1f} | |")
    print()
    print(f"| group of {g} from one prompt | wall s | tokens/s |")
    print("| --- | ---: | ---: |")
    print(f"| {g} copies of the prompt (prefill x{g}) | {t_copies:.2f} | {g * n / t_copies:.0f} |")
    print(f"| shared prefix (prefill once) | {t_shared:.2f} | {g * n / t_shared:.0f} |")
    print(f"| gain from prefix sharing | {t_copies / t_shared:.2f}x | |")


if __name__ == "__main__":
    main()
