"""An OpenAI-compatible chat endpoint (``POST {base}/chat/completions``) for the teacher or the rater (issue 19).

Optional: the default teacher and rater are local checkpoints served by our engine. This client speaks the
common subset of the chat-completions protocol with the standard library only (`urllib`): one request per
call, images sent inline as ``data:image/png;base64`` URLs, the reply read from ``choices[0].message.content``.

Messages come in the project's chat format (`processing.prompts`: ``{"role", "content": [{"type": "text",
"text"}, {"type": "image"}]}``); each ``{"type": "image"}`` entry takes the next image of `images`, in order.
"""

from __future__ import annotations

import base64
import io
import json
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image


class EndpointError(RuntimeError):
    """The endpoint could not be reached or answered something other than a chat completion."""


def image_data_url(image: Image.Image) -> str:
    """The image as a PNG data URL (lossless, so the endpoint sees the pixels the local model would)."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def to_openai_messages(messages: Sequence[dict[str, Any]], images: Sequence[Image.Image]) -> list[dict[str, Any]]:
    """Our chat messages with every image entry replaced by an ``image_url`` part holding the next image.

    Raises ValueError when the messages hold a different number of image entries than `images`.
    """
    pending = list(images)
    out = []
    for message in messages:
        content = message["content"]
        if isinstance(content, str):
            out.append({"role": message["role"], "content": content})
            continue
        parts = []
        for part in content:
            if part["type"] == "image":
                if not pending:
                    raise ValueError(f"messages hold more image entries than the {len(images)} images given")
                parts.append({"type": "image_url", "image_url": {"url": image_data_url(pending.pop(0))}})
            else:
                parts.append({"type": "text", "text": part["text"]})
        out.append({"role": message["role"], "content": parts})
    if pending:
        raise ValueError(f"{len(pending)} of the {len(images)} images have no image entry in the messages")
    return out


@dataclass(frozen=True)
class ChatEndpoint:
    """One OpenAI-compatible server and model. `url` is the API base (``http://host:8000/v1``) or the full
    ``.../chat/completions`` address; `api_key_env` names the environment variable holding the bearer token
    (sent only when it is set)."""

    url: str
    model: str
    max_tokens: int = 1024
    temperature: float = 1.0
    timeout_s: float = 300.0
    api_key_env: str = "OPENAI_API_KEY"

    @property
    def address(self) -> str:
        base = self.url.rstrip("/")
        return base if base.endswith("/chat/completions") else base + "/chat/completions"

    def chat(self, messages: Sequence[dict[str, Any]], images: Sequence[Image.Image] = (),
             temperature: float | None = None) -> str:
        """The assistant's reply text to `messages` (module docstring). Raises EndpointError naming the address."""
        body = {"model": self.model, "messages": to_openai_messages(messages, images),
                "max_tokens": self.max_tokens,
                "temperature": self.temperature if temperature is None else temperature}
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.address, data=json.dumps(body).encode("utf-8"), headers=headers,
                                         method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                payload = response.read()
        except urllib.error.HTTPError as err:
            detail = err.read()[:300].decode("utf-8", "replace")
            raise EndpointError(f"{self.address}: HTTP {err.code} {err.reason}: {detail}") from err
        except (urllib.error.URLError, OSError) as err:
            raise EndpointError(f"{self.address}: cannot reach the endpoint: {err}") from err
        try:
            content = json.loads(payload)["choices"][0]["message"]["content"]
        except (json.JSONDecodeError, KeyError, IndexError, TypeError) as err:
            raise EndpointError(f"{self.address}: expected a chat completion with choices[0].message.content, "
                                f"found {payload[:200]!r}") from err
        if isinstance(content, list):  # some servers return content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            raise EndpointError(f"{self.address}: choices[0].message.content is {type(content).__name__}, "
                                "expected text")
        return content
