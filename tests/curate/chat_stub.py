"""A tiny local OpenAI-compatible chat server for the curation tests (http.server on 127.0.0.1, a free port):
`reply(body) -> str` answers each POST to /v1/chat/completions; every request body is kept in `requests`."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class ChatStub:
    def __init__(self, reply: Callable[[dict[str, Any]], str], status: int = 200) -> None:
        self.reply, self.status, self.requests = reply, status, []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                if stub.status != 200:
                    payload = b'{"error": "stub refuses"}'
                else:
                    content = stub.reply(body)
                    payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
                self.send_response(stub.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    def __enter__(self) -> ChatStub:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


def text_of(body: dict[str, Any]) -> str:
    """All text parts of a request's messages, joined."""
    parts = []
    for m in body["messages"]:
        content = m["content"]
        parts += [content] if isinstance(content, str) else [p["text"] for p in content if p["type"] == "text"]
    return "\n".join(parts)


def images_of(body: dict[str, Any]) -> list[str]:
    """The data URLs of a request's images, in order."""
    return [p["image_url"]["url"] for m in body["messages"] if not isinstance(m["content"], str)
            for p in m["content"] if p.get("type") == "image_url"]
