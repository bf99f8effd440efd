"""The optional OpenAI-compatible endpoint (issue 19) against a local http.server stub: the request carries the
model, the prompt texts and the images as PNG data URLs (pixels round-trip exactly); a crop request is cut by
the inference crop code and sent with the original in a second request; HTTP errors name the address; the
endpoint rater turns a failure into an error, never a parseable reply."""

import base64
import io

import numpy as np
import pytest
from PIL import Image

from tests.curate.chat_stub import ChatStub, images_of, text_of
from tests.inference.replies import CROP, FINAL, STAGE2
from zoomiqa_jax.curate.endpoint import ChatEndpoint, EndpointError, to_openai_messages
from zoomiqa_jax.curate.rater import EndpointRater, RaterQuery
from zoomiqa_jax.curate.teacher import EndpointTeacher
from zoomiqa_jax.inference.rounds import ImageItem
from zoomiqa_jax.processing.crop import crop_and_zoom, crop_box
from zoomiqa_jax.processing.prompts import DEFAULT_PROMPTS


def _image(w=90, h=60, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def _decode(url):
    assert url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")


def test_chat_sends_model_texts_and_lossless_images(monkeypatch):
    monkeypatch.setenv("ZOOMIQA_TEST_KEY", "secret-for-the-stub")
    img = _image()
    with ChatStub(lambda body: "hello") as stub:
        endpoint = ChatEndpoint(stub.url, "teacher-x", max_tokens=77, temperature=0.5, api_key_env="ZOOMIQA_TEST_KEY")
        messages = [{"role": "user", "content": [{"type": "text", "text": "rate it"}, {"type": "image"}]}]
        assert endpoint.chat(messages, [img]) == "hello"
    (req,) = stub.requests
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer secret-for-the-stub"
    body = req["body"]
    assert body["model"] == "teacher-x" and body["max_tokens"] == 77 and body["temperature"] == 0.5
    assert text_of(body) == "rate it"
    (url,) = images_of(body)
    assert np.array_equal(np.asarray(_decode(url)), np.asarray(img))


def test_image_count_must_match_the_entries():
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "image"}]}]
    with pytest.raises(ValueError, match="more image entries"):
        to_openai_messages(messages, [_image()])
    with pytest.raises(ValueError, match="no image entry"):
        to_openai_messages(messages[:0], [_image()])


def test_http_error_names_the_address():
    with ChatStub(lambda body: "", status=500) as stub:
        with pytest.raises(EndpointError, match=r"127\.0\.0\.1:\d+/v1/chat/completions: HTTP 500"):
            ChatEndpoint(stub.url, "m").chat([{"role": "user", "content": "x"}])
    with pytest.raises(EndpointError, match="cannot reach"):
        ChatEndpoint(stub.url, "m", timeout_s=2).chat([{"role": "user", "content": "x"}])  # server is down now


def test_endpoint_teacher_crops_with_the_inference_code():
    img = _image(112, 84, seed=3)
    replies = iter([CROP, STAGE2, FINAL])
    with ChatStub(lambda body: next(replies)) as stub:
        teacher = EndpointTeacher(ChatEndpoint(stub.url, "t"), seed=0)
        out = teacher.write([ImageItem("a.png", img, index=0), ImageItem("b.png", img, index=1)])
    assert [r.texts for r in out] == [(CROP, STAGE2), (FINAL,)] and all(r.error is None for r in out)
    first, second, third = (r["body"] for r in stub.requests)
    assert DEFAULT_PROMPTS.zoomiqa_stage1.split("\n")[-1] in text_of(first)
    assert out[0].question in text_of(first)
    original, crop = (_decode(u) for u in images_of(second))
    expected = crop_and_zoom(img, crop_box([0.1, 0.1, 0.5, 0.6], 112, 84))
    assert np.array_equal(np.asarray(original), np.asarray(img))
    assert np.array_equal(np.asarray(crop), np.asarray(expected))
    assert CROP in text_of(second) and len(images_of(third)) == 1  # stage-1 reply in the history


def test_endpoint_failures_are_errors_not_replies():
    with ChatStub(lambda body: "", status=503) as stub:
        teacher = EndpointTeacher(ChatEndpoint(stub.url, "t"))
        (reply,) = teacher.write([ImageItem("a.png", _image(), index=0)])
        rater = EndpointRater(ChatEndpoint(stub.url, "r"))
        ((text, error),) = rater.judge([RaterQuery(_image(), "rationale", "hints")], [0])
    assert reply.texts == () and "HTTP 503" in reply.error
    assert text is None and error.startswith("rater endpoint:") and "HTTP 503" in error
