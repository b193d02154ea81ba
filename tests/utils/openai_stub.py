"""A real OpenAI- and Anthropic-compatible HTTP server on a free loopback port, for
instrumentation tests.

Serves ``POST /v1/chat/completions`` (JSON, or server-sent events when ``stream`` is
true, with a final usage chunk when ``stream_options.include_usage`` is set),
``POST /v1/embeddings`` and Anthropic's ``POST /v1/messages`` (JSON or its event stream).
OpenAI usage reports cached prompt tokens the way OpenAI does
(``prompt_tokens_details.cached_tokens``), and reasoning tokens for :data:`REASONING_MODEL`;
Anthropic usage reports ``input_tokens`` without the cache reads and writes, as Anthropic
does, and its stream's ``message_start`` carries ``output_tokens: 1`` as the real API's does;
its ``message_delta`` carries the whole usage, cumulative, as the API's does now.
A request that offers tools and has no tool result yet gets a call to the first tool (an
OpenAI ``tool_calls`` message, an Anthropic ``tool_use`` block); once a tool result is in
the conversation, the answer. A request for model :data:`FAIL_MODEL` gets a 500 with the
API's error body.

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
REASONING_MODEL: Final = "o4-mini"  # the one model whose usage reports reasoning tokens
REASONING_MODEL_TOKENS: Final = 64
TOOL_CALL_ID: Final = "call_stub1"
# Anthropic: input_tokens excludes cache reads and writes (1500 + 1024 + 297 = 2821 in all).
ANTHROPIC_INPUT_TOKENS: Final = 1500
ANTHROPIC_CACHE_READ_TOKENS: Final = 1024
ANTHROPIC_CACHE_WRITE_TOKENS: Final = 297
ANTHROPIC_OUTPUT_TOKENS: Final = 7
EMBEDDING_TOKENS: Final = 5
ANSWER_PIECES: Final = ("The ", "answer ", "is ", "42", ".")
SNAPSHOT_SUFFIX: Final = "-2024-07-18"  # the response names a dated snapshot
FIRST_CHUNK_DELAY_S: Final = 0.05
CREATED: Final = 1_730_000_000


def _usage(model: str = "") -> dict[str, Any]:
    reasoning = REASONING_MODEL_TOKENS if model == REASONING_MODEL else REASONING_TOKENS
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": COMPLETION_TOKENS,
        "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
        "prompt_tokens_details": {"cached_tokens": CACHED_TOKENS, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0},
    }


def _anthropic_usage(output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": ANTHROPIC_INPUT_TOKENS,
        "output_tokens": output_tokens,
        "cache_read_input_tokens": ANTHROPIC_CACHE_READ_TOKENS,
        "cache_creation_input_tokens": ANTHROPIC_CACHE_WRITE_TOKENS,
    }


def _wants_tool_call(body: dict[str, Any], result_role: str, result_type: str) -> bool:
    """Tools offered and no tool result in the conversation yet."""
    if not body.get("tools"):
        return False
    for message in body.get("messages") or []:
        if message.get("role") == result_role:
            content = message.get("content")
            if not result_type:
                return False
            if isinstance(content, list) and any(
                isinstance(part, dict) and part.get("type") == result_type for part in content
            ):
                return False
    return True


def _first_tool_name(body: dict[str, Any]) -> str:
    tool = body["tools"][0]
    return str(tool.get("name") or tool.get("function", {}).get("name", ""))


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
        if body.get("model") == FAIL_MODEL and self.path == "/v1/messages":
            error = {"type": "api_error", "message": "stub failure"}
            self._json(500, {"type": "error", "error": error})
        elif body.get("model") == FAIL_MODEL:
            self._json(500, {"error": {"message": "stub failure", "type": "server_error"}})
        elif self.path == "/v1/messages":
            if body.get("stream"):
                self._anthropic_stream(body)
            else:
                self._json(200, self._anthropic_message(body))
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
        message: dict[str, Any] = {"role": "assistant", "content": "".join(ANSWER_PIECES)}
        finish_reason = "stop"
        if _wants_tool_call(body, "tool", ""):
            function = {"name": _first_tool_name(body), "arguments": "{}"}
            call = {"id": TOOL_CALL_ID, "type": "function", "function": function}
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
            finish_reason = "tool_calls"
        return {
            "id": "chatcmpl-stub1",
            "object": "chat.completion",
            "created": CREATED,
            "model": self._model(body),
            "system_fingerprint": "fp_stub",
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
            ],
            "usage": _usage(str(body.get("model", ""))),
        }

    def _anthropic_message(self, body: dict[str, Any]) -> dict[str, Any]:
        content: list[dict[str, Any]] = [{"type": "text", "text": "".join(ANSWER_PIECES)}]
        stop_reason = "end_turn"
        if _wants_tool_call(body, "user", "tool_result"):
            name = _first_tool_name(body)
            content = [{"type": "tool_use", "id": TOOL_CALL_ID, "name": name, "input": {}}]
            stop_reason = "tool_use"
        return {
            "id": "msg_stub1",
            "type": "message",
            "role": "assistant",
            "model": self._model(body),
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": _anthropic_usage(ANTHROPIC_OUTPUT_TOKENS),
        }

    def _anthropic_stream(self, body: dict[str, Any]) -> None:
        self._start_event_stream()
        time.sleep(FIRST_CHUNK_DELAY_S)  # a measurable time to first chunk
        message = self._anthropic_message(body)
        start = {**message, "content": [], "stop_reason": None}
        start["usage"] = _anthropic_usage(1)  # what the real API reports before any text
        self._named_event("message_start", {"type": "message_start", "message": start})
        (block,) = message["content"]
        if block["type"] == "tool_use":
            opening = {**block, "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": "{}"}]
        else:
            opening = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": piece} for piece in ANSWER_PIECES]
        self._named_event(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": opening},
        )
        for delta in deltas:
            self._named_event(
                "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
            )
            time.sleep(0.002)
        self._named_event("content_block_stop", {"type": "content_block_stop", "index": 0})
        self._named_event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                # Cumulative, input and cache counts included, as the API sends it (what
                # langchain-anthropic reads a streamed call's input tokens from).
                "usage": _anthropic_usage(ANTHROPIC_OUTPUT_TOKENS),
            },
        )
        self._named_event("message_stop", {"type": "message_stop"})
        self.close_connection = True

    def _start_event_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()

    def _named_event(self, name: str, doc: dict[str, Any]) -> None:
        self.wfile.write(f"event: {name}\n".encode() + b"data: " + json.dumps(doc).encode())
        self.wfile.write(b"\n\n")
        self.wfile.flush()

    def _stream(self, body: dict[str, Any]) -> None:
        self._start_event_stream()
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
            self._event({**base, "choices": [], "usage": _usage(str(body.get("model", "")))})
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
    def anthropic_base_url(self) -> str:
        """The Anthropic client's ``base_url`` (it adds ``/v1/messages`` itself)."""
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}"

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
