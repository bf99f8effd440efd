"""The vision tower and its host-side metadata equal transformers' separately, so a failure names the layer."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import vision_utils

from tests.reference import make_hf_model, ours_from_hf, random_pixels
from zoomiqa_jax.config import ModelConfig
from zoomiqa_jax.model import vision_metadata

TOL = 1e-4  # float32 features of a tiny random tower

GRIDS = [
    [(1, 12, 20)],  # merged 6x10: the 4-token window divides neither side
    [(1, 8, 8)],  # merged 4x4: exactly one window
    [(1, 12, 20), (1, 10, 14), (1, 2, 2)],  # several images, one of a single merged token
    [(2, 6, 10)],  # two temporal frames (video-style grid)
    [(1, 34, 2)],  # extreme aspect ratio
    [(1, 4, 4)] * 10 + [(1, 6, 8)],  # many images: full attention runs per image in chunks (n > 3 x chunk)
]


@pytest.mark.parametrize("window_size", [112, 56, 84])
@pytest.mark.parametrize("grids", GRIDS, ids=lambda g: "+".join("x".join(map(str, x)) for x in g))
def test_window_index_and_positions_match_reference(grids, window_size):
    cfg = ModelConfig.tiny(window_size=window_size).vision
    g = torch.tensor(grids)
    ref_index, ref_cu = vision_utils.get_vision_window_index(
        g, spatial_merge_size=cfg.spatial_merge_size, window_size=cfg.window_size, patch_size=cfg.patch_size
    )
    ref_pos = vision_utils.get_vision_position_ids(g, cfg.spatial_merge_size).numpy()
    meta = vision_metadata(np.array(grids), cfg)
    np.testing.assert_array_equal(meta.window_index, ref_index.numpy())
    np.testing.assert_array_equal(np.argsort(meta.window_index), meta.reverse_index)
    # positions are stored in window order: the reference's raster positions permuted by merged token
    unit = cfg.merge_unit
    permuted = ref_pos.reshape(-1, unit, 2)[ref_index.numpy()].reshape(-1, 2)
    np.testing.assert_array_equal(meta.positions, permuted)
    # window segments are contiguous runs whose boundaries are the reference's cu_window_seqlens
    boundaries = np.flatnonzero(np.diff(meta.window_segment)) + 1
    np.testing.assert_array_equal(np.concatenate([[0], boundaries, [len(meta.window_segment)]]), ref_cu.numpy())
    cu = vision_utils.get_vision_cu_seqlens(g).numpy()
    img_bounds = np.flatnonzero(np.diff(meta.image_segment)) + 1
    np.testing.assert_array_equal(np.concatenate([[0], img_bounds, [len(meta.image_segment)]]), cu)


@pytest.fixture(scope="module")
def towers():
    out = {}
    for name, cfg in {
        "w112_full13": ModelConfig.tiny(),
        "w56_full02": ModelConfig.tiny(window_size=56, depth=3, fullatt_block_indexes=(0, 2)),
    }.items():
        hf = make_hf_model(cfg, seed=3)
        out[name] = (cfg, hf, ours_from_hf(hf, cfg))
    return out


@pytest.mark.parametrize("name", ["w112_full13", "w56_full02"])
@pytest.mark.parametrize("grids", GRIDS[:3] + GRIDS[4:], ids=lambda g: "+".join("x".join(map(str, x)) for x in g))
def test_vision_tower_matches_reference(towers, name, grids):
    cfg, hf, ours = towers[name]
    pixels = random_pixels(cfg, grids, seed=4)
    with torch.no_grad():
        ref = hf.model.visual(torch.from_numpy(pixels), grid_thw=torch.tensor(grids)).pooler_output.numpy()
    meta = vision_metadata(np.array(grids), cfg.vision)
    if len(grids) > 3:
        assert meta.full_chunk is not None and len(pixels) > 3 * meta.full_chunk, "case must take the chunked path"
    got = np.asarray(ours.visual(jnp.asarray(pixels), meta))
    assert got.shape == ref.shape
    err = np.abs(got - ref).max()
    assert err <= TOL, f"max-abs-diff {err:.3g}"
