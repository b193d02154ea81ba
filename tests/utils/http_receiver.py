"""A real HTTP server on a free loopback port that records requests and answers as told.

Stands in for PagerDuty's Events API v2 (and chat webhooks) in tests: each request
is answered from a script of replies, then by a responder function, then by the
default reply. A reply can also hang (hold the connection without answering) to
exercise client timeouts. With ``validate_pagerduty=True`` an event posted to
``/v2/enqueue`` that the real API would reject gets a 400 with PagerDuty's error shape.

>>> import urllib.request
>>> with HttpReceiver() as receiver:
...     receiver.script(429)
...     codes = []
...     for _ in range(2):
...         req = urllib.request.Request(receiver.url, data=b"{}", method="POST")
...         try:
...             codes.append(urllib.request.urlopen(req, timeout=5).status)
...         except urllib.error.HTTPError as err:
...             codes.append(err.code)
>>> codes, len(receiver.requests)
([429, 202], 2)
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PAGERDUTY_PATH = "/v2/enqueue"
MAX_BODY_BYTES = 512 * 1024
FOREVER = float("inf")


@dataclass(frozen=True)
class Reply:
    """What to answer: a status (with PagerDuty-like default bodies) or a hang."""

    status: int = 202
    body: Any = None  # dict -> JSON, str -> text, None -> a default for the status
    headers: dict[str, str] = field(default_factory=dict)
    hang_s: float | None = None  # hold the connection this long, then close without answering


HANG = Reply(hang_s=FOREVER)
ReplySpec = Reply | int | str  # 202, "hang", Reply(...)


def as_reply(spec: ReplySpec) -> Reply:
    if isinstance(spec, Reply):
        return spec
    if spec == "hang":
        return HANG
    if isinstance(spec, int):
        return Reply(spec)
    raise ValueError(f"reply must be a Reply, an HTTP status or 'hang', got {spec!r}")


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    arrived_at: float  # time.time()
    arrived_perf: float  # time.perf_counter(), for latency measurements in the same process
    answered: int | None  # status sent, None if the request was held (hang)

    def json(self) -> Any:
        return json.loads(self.body)


def pagerduty_errors(body: bytes) -> list[str]:
    """Reasons the Events API v2 would answer 400 (the checks its docs describe)."""
    if len(body) > MAX_BODY_BYTES:
        return [f"event is {len(body)} bytes, over the 512 KB limit"]
    try:
        event = json.loads(body)
    except ValueError:
        return ["body is not valid JSON"]
    if not isinstance(event, dict):
        return ["event must be a JSON object"]
    errors = []
    if not isinstance(event.get("routing_key"), str) or not event["routing_key"]:
        errors.append("'routing_key' is missing or blank")
    action = event.get("event_action")
    if action not in ("trigger", "acknowledge", "resolve"):
        errors.append("'event_action' is invalid (must be trigger, acknowledge or resolve)")
    dedup_key = event.get("dedup_key")
    if dedup_key is not None and (not isinstance(dedup_key, str) or len(dedup_key) > 255):
        errors.append("'dedup_key' must be a string of at most 255 characters")
    if action in ("acknowledge", "resolve") and not dedup_key:
        errors.append("'dedup_key' is required for acknowledge and resolve")
    if action == "trigger":
        payload = event.get("payload")
        if not isinstance(payload, dict):
            return [*errors, "'payload' is missing"]
        summary = payload.get("summary")
        if not isinstance(summary, str) or not summary.strip():
            errors.append("'payload.summary' is missing or blank")
        elif len(summary) > 1024:
            errors.append("'payload.summary' is longer than 1024 characters")
        if not isinstance(payload.get("source"), str) or not payload["source"].strip():
            errors.append("'payload.source' is missing or blank")
        if payload.get("severity") not in ("critical", "error", "warning", "info"):
            errors.append("'payload.severity' is invalid (critical, error, warning or info)")
        for link in event.get("links") or []:
            if not isinstance(link, dict) or not link.get("href"):
                errors.append("'links' entries need an 'href'")
    return errors


def _default_body(status: int, request_body: bytes) -> Any:
    if 200 <= status < 300:
        try:
            dedup_key = json.loads(request_body).get("dedup_key", "")
        except (ValueError, AttributeError):
            dedup_key = ""
        return {"status": "success", "message": "Event processed", "dedup_key": dedup_key}
    if status == 400:
        return {"status": "invalid event", "message": "Event object is invalid", "errors": []}
    if status == 429:
        return {"status": "throttle event", "message": "Requests arriving too quickly"}
    return "Internal Server Error"


class HttpReceiver:
    """Threaded HTTP server on ``127.0.0.1:<free port>``; use as a context manager."""

    def __init__(self, default: ReplySpec = 202, *, validate_pagerduty: bool = False) -> None:
        self.default = as_reply(default)
        self.validate_pagerduty = validate_pagerduty
        self._script: deque[Reply] = deque()
        self._responder: Callable[[ReceivedRequest], ReplySpec] | None = None
        self._requests: list[ReceivedRequest] = []
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._release = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- control ---------------------------------------------------------------------

    def script(self, *replies: ReplySpec) -> None:
        """Answer the next requests with these replies, in order, before anything else."""
        with self._lock:
            self._script.extend(as_reply(r) for r in replies)

    def respond_with(self, responder: Callable[[ReceivedRequest], ReplySpec] | None) -> None:
        """Decide replies per request (after the script runs out); None: use the default."""
        with self._lock:
            self._responder = responder

    @property
    def requests(self) -> list[ReceivedRequest]:
        with self._lock:
            return list(self._requests)

    def bodies(self) -> list[Any]:
        return [r.json() for r in self.requests]

    def wait_for(self, count: int, timeout_s: float = 5.0) -> list[ReceivedRequest]:
        deadline = time.monotonic() + timeout_s
        with self._arrived:
            while len(self._requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"got {len(self._requests)} of {count} requests")
                self._arrived.wait(left)
            return list(self._requests)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()
            self._script.clear()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("receiver not started: use `with HttpReceiver() as r:`")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.base_url + PAGERDUTY_PATH

    def start(self) -> HttpReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                receiver._handle(self, body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        self._release.clear()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="http-receiver", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()  # let hanging handlers finish
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None

    def __enter__(self) -> HttpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- serving ---------------------------------------------------------------------

    def _choose(self, request: ReceivedRequest) -> Reply:
        with self._lock:
            if self._script:
                return self._script.popleft()
            responder = self._responder
        return as_reply(responder(request)) if responder else self.default

    def _handle(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        probe = ReceivedRequest(
            method=handler.command,
            path=handler.path,
            headers={k.lower(): v for k, v in handler.headers.items()},
            body=body,
            arrived_at=time.time(),
            arrived_perf=time.perf_counter(),
            answered=None,
        )
        reply = self._choose(probe)
        status = None if reply.hang_s is not None else reply.status
        response_body = reply.body
        accepting = status is not None and 200 <= status < 300
        validating = self.validate_pagerduty and probe.path == PAGERDUTY_PATH
        if accepting and validating and (errors := pagerduty_errors(body)):
            status = 400
            response_body = {
                "status": "invalid event",
                "message": "Event object is invalid",
                "errors": errors,
            }
        with self._arrived:
            self._requests.append(ReceivedRequest(**{**probe.__dict__, "answered": status}))
            self._arrived.notify_all()
        if reply.hang_s is not None:
            self._release.wait(None if reply.hang_s == FOREVER else reply.hang_s)
            handler.close_connection = True
            return
        assert status is not None
        if response_body is None:
            response_body = _default_body(status, body)
        if isinstance(response_body, str):
            payload, content_type = response_body.encode(), "text/plain"
        else:
            payload, content_type = json.dumps(response_body).encode(), "application/json"
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(payload)))
        for name, value in reply.headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(payload)
