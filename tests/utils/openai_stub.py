"""A real OpenAI-compatible HTTP server on a free loopback port, for instrumentation tests.

Serves ``POST /v1/chat/completions`` (JSON, or server-sent events when ``stream`` is
true, with a final usage chunk when ``stream_options.include_usage`` is set) and
``POST /v1/embeddings``. Usage reports cached prompt tokens the way OpenAI does
(``prompt_tokens_details.cached_tokens``). A request for model :data:`FAIL_MODEL`
gets a 500 with an OpenAI-style error body.

>>> with OpenAIStub() as stub:
...     stub.base_url.startswith("http://127.0.0.1:")
True
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

FAIL_MODEL: Final = "stub-fail-500"
PROMPT_TOKENS: Final = 1200
CACHED_TOKENS: Final = 1024
COMPLETION_TOKENS: Final = 7
REASONING_TOKENS: Final = 0
EMBEDDING_TOKENS: Final = 5
ANSWER_PIECES: Final = ("The ", "answer ", "is ", "42", ".")
SNAPSHOT_SUFFIX: Final = "-2024-07-18"  # the response names a dated snapshot
FIRST_CHUNK_DELAY_S: Final = 0.05
CREATED: Final = 1_730_000_000


def _usage() -> dict[str, Any]:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": COMPLETION_TOKENS,
        "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
        "prompt_tokens_details": {"cached_tokens": CACHED_TOKENS, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": REASONING_TOKENS, "audio_tokens": 0},
    }


class _Handler(BaseHTTPRequestHandler):
    server_version = "openai-stub/1"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        return

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError:
            self._json(
                400, {"error": {"message": "body is not JSON", "type": "invalid_request_error"}}
            )
            return
        assert isinstance(self.server, _Server)
        self.server.requests.append((self.path, body))
        if body.get("model") == FAIL_MODEL:
            self._json(500, {"error": {"message": "stub failure", "type": "server_error"}})
        elif self.path == "/v1/chat/completions":
            if body.get("stream"):
                self._stream(body)
            else:
                self._json(200, self._completion(body))
        elif self.path == "/v1/embeddings":
            self._json(200, self._embeddings(body))
        else:
            self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

    def _json(self, status: int, doc: dict[str, Any]) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    @staticmethod
    def _model(body: dict[str, Any]) -> str:
        return str(body.get("model", "")) + SNAPSHOT_SUFFIX

    def _completion(self, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": "chatcmpl-stub1",
            "object": "chat.completion",
            "created": CREATED,
            "model": self._model(body),
            "system_fingerprint": "fp_stub",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(ANSWER_PIECES)},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": _usage(),
        }

    def _stream(self, body: dict[str, Any]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        base = {
            "id": "chatcmpl-stub2",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": self._model(body),
            "system_fingerprint": "fp_stub",
        }
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        time.sleep(FIRST_CHUNK_DELAY_S)  # a measurable time to first chunk
        chunks: list[dict[str, Any]] = [
            {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
        ]
        chunks += [
            {"index": 0, "delta": {"content": piece}, "finish_reason": None}
            for piece in ANSWER_PIECES
        ]
        chunks.append({"index": 0, "delta": {}, "finish_reason": "stop"})
        for choice in chunks:
            doc = {**base, "choices": [choice]}
            if include_usage:
                doc["usage"] = None
            self._event(doc)
            time.sleep(0.002)
        if include_usage:
            self._event({**base, "choices": [], "usage": _usage()})
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True

    def _event(self, doc: dict[str, Any]) -> None:
        self.wfile.write(b"data: " + json.dumps(doc).encode() + b"\n\n")
        self.wfile.flush()

    def _embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        inputs = body.get("input")
        count = len(inputs) if isinstance(inputs, list) else 1
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": [0.1, -0.2, 0.3]}
                for i in range(count)
            ],
            "model": str(body.get("model", "")),
            "usage": {"prompt_tokens": EMBEDDING_TOKENS, "total_tokens": EMBEDDING_TOKENS},
        }


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[tuple[str, dict[str, Any]]] = []


class OpenAIStub:
    """Context manager running the stub server in a thread; ``base_url`` ends in ``/v1``."""

    def __init__(self) -> None:
        self._server = _Server()
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}/v1"

    @property
    def requests(self) -> list[tuple[str, dict[str, Any]]]:
        return self._server.requests

    def __enter__(self) -> OpenAIStub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
