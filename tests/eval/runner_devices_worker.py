"""Run in a subprocess with 8 simulated CPU devices: Zoom-IQA inference on a tiny random model, single device
vs `DataParallelGenerate` over the 8 devices (greedy).

Prints one JSON line: devices, devices used by the last data-parallel round, whether the trajectories are equal,
the max |logprob| difference of a raw batch, and whether its tokens are equal.
"""

import json
import os
import sys

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402
from PIL import Image  # noqa: E402

from zoomiqa_jax.config import ModelConfig  # noqa: E402
from zoomiqa_jax.eval.runner_devices import DataParallelGenerate  # noqa: E402
from zoomiqa_jax.inference import engine  # noqa: E402
from zoomiqa_jax.inference.rounds import (  # noqa: E402
    ImageItem,
    RowPrompt,
    SamplingSettings,
    encode_images,
    render_prompt,
    sample_round,
)
from zoomiqa_jax.inference.zoom import run_zoomiqa  # noqa: E402
from zoomiqa_jax.model import Qwen25VL  # noqa: E402
from zoomiqa_jax.processing.tokenizer import TINY_TOKENIZER_DIR, load_tokenizer  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


def _split_logprobs(tree, sink: list):  # noqa: ANN001, ANN202
    """`tree` without its log-prob lists (appended to `sink` in order): those differ by float rounding."""
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            if "logprob" in k and isinstance(v, list):
                sink.extend(v)
            else:
                out[k] = _split_logprobs(v, sink)
        return out
    if isinstance(tree, list):
        return [_split_logprobs(v, sink) for v in tree]
    return tree


def main() -> None:
    model = Qwen25VL(ModelConfig.tiny(), rngs=nnx.Rngs(0))
    tokenizer = load_tokenizer(TINY_TOKENIZER_DIR)
    rng = np.random.default_rng(0)
    sizes = [(28, 28), (56, 28), (28, 56)]
    items = [ImageItem(f"img{i}", Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)), index=i)
             for i, (h, w) in enumerate(sizes)]
    settings = SamplingSettings(max_new_tokens=8, temperature=0.0, min_pixels=784, max_pixels=3136)
    dp = DataParallelGenerate(model)
    single = [t.to_dict() for t in run_zoomiqa(model, tokenizer, items, settings, max_turns=2)]
    parallel = [t.to_dict() for t in run_zoomiqa(model, tokenizer, items, settings, max_turns=2, generate_fn=dp)]
    used = dp.last_devices_used
    logps_single, logps_parallel = [], []
    single, parallel = _split_logprobs(single, logps_single), _split_logprobs(parallel, logps_parallel)

    # one raw round, dummy rows included: tokens equal, log-probs within float rounding
    rows = []
    for item in items:
        images = encode_images([item.image], settings)
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Rate it."}]}]
        rows.append(RowPrompt(render_prompt(tokenizer, messages, images), images, item.index))
    pad = model.config.bos_token_id
    calls = {}

    def recording(fn, name):  # noqa: ANN001, ANN202
        def run(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            calls[name] = fn(*args, **kwargs)
            return calls[name]
        return run

    sample_round(model, rows, settings, round_index=0, pad_token_id=pad, generate_fn=recording(engine.generate, "one"))
    sample_round(model, rows, settings, round_index=0, pad_token_id=pad, generate_fn=recording(dp, "dp"))
    n = len(rows)
    one, par = calls["one"], calls["dp"]
    print(json.dumps({
        "devices": jax.local_device_count(), "devices_used": used, "raw_devices_used": dp.last_devices_used,
        "trajectories_equal": single == parallel, "n_trajectories": len(parallel),
        "trajectory_logprob_max_diff": float(np.abs(np.subtract(logps_single, logps_parallel)).max()),
        "tokens_equal": bool((one.tokens[:n] == par.tokens[:n]).all() and (one.lengths[:n] == par.lengths[:n]).all()),
        "logprob_max_diff": float(np.abs(one.logprobs[:n] - par.logprobs[:n]).max()),
    }))


if __name__ == "__main__":
    main()
