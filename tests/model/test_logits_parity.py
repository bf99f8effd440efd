"""Our Qwen2.5-VL forward equals transformers' PyTorch model (float32, max-abs-diff <= 1e-4 on valid tokens)."""

import jax.numpy as jnp
import numpy as np
import pytest

from tests.reference import hf_logits, image_prompt, left_pad, make_hf_model, ours_from_hf, random_pixels
from zoomiqa_jax.config import ModelConfig

TOL = 1e-4  # float32 logits, tiny random models

CONFIGS = {
    # merger window 4 does not divide the 6x10 / 5x7 merged grids; two full-attention blocks; tied embeddings
    "tied_w112": ModelConfig.tiny(tie_word_embeddings=True),
    # untied lm_head, merger window 2 (window 56 px), full attention first and last, depth 3
    "untied_w56": ModelConfig.tiny(tie_word_embeddings=False, window_size=56, depth=3, fullatt_block_indexes=(0, 2)),
    # 4:1 GQA, wider heads, other M-RoPE sections, 2 vision heads
    "gqa4_w84": ModelConfig(
        vision=ModelConfig.tiny().vision.__class__(
            depth=2, hidden_size=32, intermediate_size=40, num_heads=2, window_size=112, out_hidden_size=96,
            fullatt_block_indexes=(1,),
        ),
        text=ModelConfig.tiny().text.__class__(
            vocab_size=300, hidden_size=96, intermediate_size=160, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=1, mrope_section=(4, 4, 4), max_position_embeddings=2048,
        ),
        tie_word_embeddings=False, image_token_id=296, video_token_id=297, vision_start_token_id=294,
        vision_end_token_id=295, bos_token_id=292, eos_token_id=293,
    ),
}

CASES = {
    "text_only": dict(rows=[[5, 6, 7, 8, 9, 10, 11]], grids=[]),
    "one_image": dict(rows=[("img", [(1, 12, 20)])], grids=[(1, 12, 20)]),
    "two_images_one_prompt": dict(rows=[("img", [(1, 12, 20), (1, 10, 14)])], grids=[(1, 12, 20), (1, 10, 14)]),
    "batch2_left_padding": dict(rows=[("img", [(1, 8, 8)]), ("img", [(1, 10, 14)])], grids=[(1, 8, 8), (1, 10, 14)]),
    "batch2_text_left_padding": dict(rows=[[3, 4, 5], [5, 6, 7, 8, 9, 10]], grids=[]),
}


@pytest.fixture(scope="module", params=list(CONFIGS))
def pair(request):
    cfg = CONFIGS[request.param]
    hf = make_hf_model(cfg, seed=1)
    return cfg, hf, ours_from_hf(hf, cfg)


@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_transformers(pair, case):
    cfg, hf, ours = pair
    spec = CASES[case]
    rows = [image_prompt(cfg, r[1], [1, 2, 3]) if isinstance(r, tuple) else r for r in spec["rows"]]
    ids, mask = left_pad(rows)
    grids = spec["grids"]
    pixels = random_pixels(cfg, grids, seed=2) if grids else None
    ref = hf_logits(hf, cfg, ids, mask, pixels, grids)
    got = np.asarray(
        ours(jnp.asarray(ids), jnp.asarray(mask), None if pixels is None else jnp.asarray(pixels),
             np.asarray(grids) if grids else None)
    )
    valid = mask.astype(bool)
    err = np.abs(got[valid] - ref[valid]).max()
    assert got.shape == ref.shape
    assert err <= TOL, f"max-abs-diff {err:.3g} > {TOL}"
