"""3-D M-RoPE position ids equal transformers' get_rope_index (text, one image, several images, left padding)."""

import numpy as np
import pytest
import torch

from tests.reference import image_prompt, left_pad, make_hf_model
from zoomiqa_jax.config import ModelConfig
from zoomiqa_jax.model import get_rope_index, prepare_inputs

CFG = ModelConfig.tiny()


@pytest.fixture(scope="module")
def hf():
    return make_hf_model(CFG, seed=0)


CASES = {
    "one_image": [[(1, 12, 20)]],
    "two_images": [[(1, 12, 20), (1, 4, 30)]],
    "batch_left_padding": [[(1, 8, 8)], [(1, 10, 14), (1, 2, 2)]],
    "video_style_frames": [[(2, 6, 10)]],
    "image_first_token": None,
}


@pytest.mark.parametrize("case", list(CASES))
def test_position_ids_match_reference(hf, case):
    if case == "image_first_token":
        grids_per_row = [[(1, 4, 6)]]
        rows = [[CFG.image_token_id] * 6 + [5, 6]]
    else:
        grids_per_row = CASES[case]
        rows = [image_prompt(CFG, g, [1, 2, 3 + i]) for i, g in enumerate(grids_per_row)]
    ids, mask = left_pad(rows)
    grids = np.array([g for row in grids_per_row for g in row])
    ref_pos, ref_delta = hf.model.get_rope_index(
        torch.from_numpy(ids),
        mm_token_type_ids=torch.from_numpy((ids == CFG.image_token_id).astype(np.int64)),
        image_grid_thw=torch.from_numpy(grids),
        attention_mask=torch.from_numpy(mask),
    )
    pos, delta = get_rope_index(CFG, ids, mask, grids)
    valid = mask.astype(bool)
    np.testing.assert_array_equal(pos[:, valid], ref_pos.numpy()[:, valid])
    np.testing.assert_array_equal(delta, ref_delta.numpy())


def test_text_only_positions_are_plain_counter():
    ids, mask = left_pad([[4, 5, 6], [4, 5, 6, 7, 8]])
    prep = prepare_inputs(CFG, ids, mask, None)
    assert prep["vision_meta"] is None
    np.testing.assert_array_equal(prep["position_ids"], np.broadcast_to(np.arange(5), (3, 2, 5)))


def test_token_count_mismatch_is_a_clear_error():
    ids, mask = left_pad([image_prompt(CFG, [(1, 8, 8)], [1])])
    with pytest.raises(ValueError, match="image tokens do not match"):
        prepare_inputs(CFG, ids, mask, np.array([[1, 8, 10]]))
    with pytest.raises(ValueError, match="no image_grid_thw"):
        prepare_inputs(CFG, ids, mask, None)
