"""bfloat16 compute stays within 2e-2 relative error of float32 on a tiny config."""

import jax.numpy as jnp
import numpy as np
import pytest

from tests.reference import hf_state_numpy, image_prompt, left_pad, make_hf_model, random_pixels
from zoomiqa_jax.checkpoint.state import model_from_hf_tensors, model_param_items
from zoomiqa_jax.config import ModelConfig

REL_TOL = 2e-2  # ||logits_bf16 - logits_fp32|| / ||logits_fp32|| over valid tokens


@pytest.mark.parametrize("param_dtype", [jnp.float32, jnp.bfloat16], ids=["fp32_params", "bf16_params"])
def test_bf16_forward_close_to_fp32(param_dtype):
    cfg = ModelConfig.tiny()
    tensors = hf_state_numpy(make_hf_model(cfg, seed=5))
    ref = model_from_hf_tensors(cfg, tensors)
    low = model_from_hf_tensors(cfg, tensors, dtype=jnp.bfloat16, param_dtype=param_dtype)
    grids = [(1, 12, 20), (1, 8, 8)]
    ids, mask = left_pad([image_prompt(cfg, grids[:1], [1, 2]), image_prompt(cfg, grids[1:], [1, 2, 3, 4])])
    px = jnp.asarray(random_pixels(cfg, grids, seed=6))
    a = np.asarray(ref(jnp.asarray(ids), jnp.asarray(mask), px, np.array(grids)), np.float32)
    out = low(jnp.asarray(ids), jnp.asarray(mask), px, np.array(grids))
    assert out.dtype == jnp.bfloat16
    b = np.asarray(out, np.float32)
    valid = mask.astype(bool)
    rel = np.linalg.norm(b[valid] - a[valid]) / np.linalg.norm(a[valid])
    assert rel <= REL_TOL, f"relative error {rel:.3g}"
    params = [v for _, v in model_param_items(low)]
    assert all(p.dtype == param_dtype for p in params)
