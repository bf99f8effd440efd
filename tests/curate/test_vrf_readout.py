"""The VRF read-out (issue 19; docs/curation.md): the answer is tokenized as text runs plus one token per digit;
with scripted logits the rating, box and entropy are the documented expectations exactly; on the tiny random
model the read-out equals a direct NumPy computation from the full forward pass, with and without the image."""

from types import SimpleNamespace

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from zoomiqa_jax.config import ModelConfig
from zoomiqa_jax.curate import vrf_readout
from zoomiqa_jax.curate.vrf_readout import DIGITS, answer_tokens, vrf_readouts
from zoomiqa_jax.inference.rounds import SamplingSettings, encode_images, render_prompt
from zoomiqa_jax.model import prepare_inputs
from zoomiqa_jax.processing.prompts import zoomiqa_stage1_messages
from zoomiqa_jax.processing.tokenizer import token_ids_of

ANSWER = '<answer>{"bbox_2d": [0.1, 0.25, 0.5, 1], "rating": 3.25, "tool": "crop"}</answer>'
TURN = "<think>\n1) Image Quality Summary: soft.\n</think>\n" + ANSWER
SETTINGS = SamplingSettings(max_pixels=56 * 56, min_pixels=28 * 28)


@pytest.fixture(scope="module")
def tok(tiny_tokenizer):
    return tiny_tokenizer


def test_answer_tokens_put_each_digit_in_its_own_token(tok):
    layout = answer_tokens(tok, ANSWER)
    assert tok.decode(layout.ids) == ANSWER
    digit_ids = token_ids_of(tok, DIGITS)
    got = {}
    for field, index, exponent, offset in layout.digits:
        got.setdefault((field, index), []).append((exponent, DIGITS[list(digit_ids).index(layout.ids[offset])]))
    assert got[("rating", 0)] == [(0, "3"), (-1, "2"), (-2, "5")]
    assert got[("bbox", 1)] == [(0, "0"), (-1, "2"), (-2, "5")] and got[("bbox", 3)] == [(0, "1")]
    assert len(got) == 5


def test_scripted_logits_give_the_documented_expectations(tok, monkeypatch):
    vocab = len(tok)
    digit_ids = token_ids_of(tok, DIGITS)
    q = np.arange(1, 11, dtype=np.float64) / 55.0  # P(digit k) = (k + 1) / 55 among the digits

    def scripted(model, ids, mask, pixels, position_ids, meta, where):
        logits = np.zeros((len(where), vocab), np.float32)  # uniform over the vocabulary ...
        logits[:, digit_ids] = np.log(q * 10).astype(np.float32)  # ... with the digits tilted
        return jnp.asarray(logits)

    monkeypatch.setattr(vrf_readout, "_logits_at", scripted)
    model = SimpleNamespace(config=ModelConfig.tiny())  # the scripted logits need no weights
    img = Image.fromarray(np.full((56, 56, 3), 128, np.uint8))
    with_image, text_only = vrf_readouts(model, tok, img, "How good?", TURN, SETTINGS)
    e_digit = float(np.dot(np.arange(10), q))  # 6.0
    # the logits are float32 (log q rounded to ~6e-8 relative), so the read-outs agree to 1e-6, not exactly
    assert with_image.rating == pytest.approx(e_digit * 1.11, abs=1e-6)
    assert with_image.bbox == pytest.approx((e_digit * 1.1, e_digit * 1.11, e_digit * 1.1, e_digit), abs=1e-6)
    p = np.ones(vocab)
    p[digit_ids] = q * 10
    p /= p.sum()
    assert with_image.entropy == pytest.approx(float(-(p * np.log(p)).sum()), abs=1e-6)
    assert text_only == with_image  # the scripted model ignores its input


@nnx.jit
def _full_forward(model, ids, pixels, position_ids, meta):
    """The model's own forward (every position projected to the vocabulary), unpadded."""
    return model(ids, None, pixels, position_ids=position_ids, vision_meta=meta)


def test_tiny_model_readout_matches_a_direct_forward(tok, tiny_model):
    model = tiny_model
    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (56, 84, 3), dtype=np.uint8))
    with_image, text_only = vrf_readouts(model, tok, img, "How good?", TURN, SETTINGS)
    layout = answer_tokens(tok, ANSWER)
    rationale = tok(TURN[: TURN.index("<answer>")], add_special_tokens=False)["input_ids"]
    digit_ids = token_ids_of(tok, DIGITS)
    messages = zoomiqa_stage1_messages("How good?")
    enc = encode_images([img], SETTINGS, 2)
    for images, got in ((enc, with_image), (None, text_only)):
        msgs = messages if images else [{**messages[0], "content": [messages[0]["content"][0]]}]
        prompt = render_prompt(tok, msgs, images, 2) + rationale
        ids = np.asarray([prompt + layout.ids], np.int32)
        prep = prepare_inputs(model.config, ids, None, None if images is None else images.grids)
        logits = np.asarray(_full_forward(model, jnp.asarray(ids), None if images is None else
                                          jnp.asarray(images.pixel_values), jnp.asarray(prep["position_ids"]),
                                          prep["vision_meta"]), np.float64)[0]
        logits = logits[len(prompt) - 1 : len(prompt) - 1 + len(layout.ids)]
        p = np.exp(logits - logits.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        rating = 0.0
        for field, _, exponent, offset in layout.digits:
            if field == "rating":
                qd = p[offset, digit_ids] / p[offset, digit_ids].sum()
                rating += 10.0**exponent * float(np.dot(np.arange(10), qd))
        entropy = float(np.mean(-(p * np.log(p)).sum(-1)))
        assert got.rating == pytest.approx(rating, abs=1e-5)
        assert got.entropy == pytest.approx(entropy, abs=1e-5)
        assert got.bbox is not None and len(got.bbox) == 4
    assert (with_image.rating, with_image.entropy) != (text_only.rating, text_only.entropy)
