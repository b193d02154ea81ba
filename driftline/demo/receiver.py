"""A local stand-in for the PagerDuty Events API v2, so the demo pages without an account.

A real HTTP server on a loopback port. ``POST /v2/enqueue`` is checked the way the
Events API documents it (JSON object under 512 KB, a routing key, ``event_action``
trigger | acknowledge | resolve, ``dedup_key`` up to 255 characters, and for a trigger a
payload with ``summary`` (up to 1024 characters), ``source`` and a known ``severity``);
a valid event is answered ``202 {"status": "success", "dedup_key": ...}``, an invalid one
``400`` with the API's error shape. What was paged is kept (without the routing key) for
the demo's live view.

>>> import json, urllib.request
>>> with PagerDutyReceiver() as receiver:
...     body = {"routing_key": "k", "event_action": "trigger",
...             "payload": {"summary": "s", "source": "x", "severity": "error"}}
...     request = urllib.request.Request(receiver.events_url, json.dumps(body).encode(),
...                                      {"Content-Type": "application/json"})
...     reply = json.loads(urllib.request.urlopen(request, timeout=5).read())
>>> reply["status"], len(reply["dedup_key"]) > 0, [p.action for p in receiver.pages()]
('success', True, ['trigger'])
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final

ENQUEUE_PATH: Final = "/v2/enqueue"
MAX_BODY_BYTES: Final = 512 * 1024
MAX_DEDUP_KEY_CHARS: Final = 255
MAX_SUMMARY_CHARS: Final = 1024
EVENT_ACTIONS: Final = frozenset({"trigger", "acknowledge", "resolve"})
SEVERITIES: Final = frozenset({"critical", "error", "warning", "info"})


@dataclass(frozen=True, slots=True)
class Page:
    """One accepted event, as the view shows it (the routing key is not kept)."""

    received_at: float  # time.time()
    action: str
    dedup_key: str
    severity: str
    summary: str
    component: str
    event_class: str


def event_errors(doc: Any) -> list[str]:
    """Why the Events API v2 would reject ``doc`` (empty: it is valid).

    >>> event_errors({"routing_key": "k", "event_action": "resolve"})
    ['dedup_key is required for resolve']
    """
    if not isinstance(doc, dict):
        return ["event must be a JSON object"]
    errors = []
    if not isinstance(doc.get("routing_key"), str) or not doc["routing_key"]:
        errors.append("routing_key is required")
    action = doc.get("event_action")
    if action not in EVENT_ACTIONS:
        errors.append("event_action must be one of trigger, acknowledge, resolve")
    dedup = doc.get("dedup_key")
    if dedup is not None and (not isinstance(dedup, str) or len(dedup) > MAX_DEDUP_KEY_CHARS):
        errors.append(f"dedup_key must be a string of at most {MAX_DEDUP_KEY_CHARS} characters")
    if action in ("acknowledge", "resolve") and not dedup:
        errors.append(f"dedup_key is required for {action}")
    if action == "trigger":
        errors.extend(_payload_errors(doc.get("payload")))
    links = doc.get("links", [])
    if not isinstance(links, list) or not all(
        isinstance(link, dict) and isinstance(link.get("href"), str) for link in links
    ):
        errors.append("links must be a list of objects with an href")
    return errors


def _payload_errors(payload: Any) -> list[str]:
    if not isinstance(payload, dict):
        return ["payload is required for trigger"]
    errors = []
    summary = payload.get("summary")
    if not isinstance(summary, str) or not summary:
        errors.append("payload.summary is required")
    elif len(summary) > MAX_SUMMARY_CHARS:
        errors.append(f"payload.summary is longer than {MAX_SUMMARY_CHARS} characters")
    if not isinstance(payload.get("source"), str) or not payload["source"]:
        errors.append("payload.source is required")
    if payload.get("severity") not in SEVERITIES:
        errors.append("payload.severity must be one of critical, error, warning, info")
    details = payload.get("custom_details")
    if details is not None and not isinstance(details, dict | list | str | int | float | bool):
        errors.append("payload.custom_details must be JSON")
    return errors


class PagerDutyReceiver:
    """The Events API v2 endpoint on ``127.0.0.1`` (a free port unless ``port`` is given)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._lock = threading.Lock()
        self._pages: list[Page] = []
        self.rejected = 0
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def events_url(self) -> str:
        return self.url + ENQUEUE_PATH

    def pages(self) -> list[Page]:
        """Accepted events, oldest first (a copy)."""
        with self._lock:
            return list(self._pages)

    def start(self) -> PagerDutyReceiver:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="pagerduty-receiver", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> PagerDutyReceiver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _accept(self, doc: dict[str, Any]) -> str:
        dedup = str(doc.get("dedup_key") or uuid.uuid4().hex)
        found = doc.get("payload")
        payload: dict[str, Any] = found if isinstance(found, dict) else {}
        page = Page(
            received_at=time.time(),
            action=str(doc["event_action"]),
            dedup_key=dedup,
            severity=str(payload.get("severity", "")),
            summary=str(payload.get("summary", "")),
            component=str(payload.get("component", "")),
            event_class=str(payload.get("class", "")),
        )
        with self._lock:
            self._pages.append(page)
        return dedup

    def _reject(self) -> None:
        with self._lock:
            self.rejected += 1

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "driftline-demo-pagerduty/1"

            def do_POST(self) -> None:  # http.server's naming
                if self.path.split("?", 1)[0] != ENQUEUE_PATH:
                    self._reply(404, {"status": "not found", "message": "use POST /v2/enqueue"})
                    return
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY_BYTES:
                    receiver._reject()
                    self._reply(413, {"status": "invalid event", "message": "event too large"})
                    return
                raw = self.rfile.read(length)
                try:
                    doc = json.loads(raw)
                except ValueError:
                    doc = None
                    errors = ["body is not valid JSON"]
                else:
                    errors = event_errors(doc)
                if errors:
                    receiver._reject()
                    self._reply(
                        400,
                        {
                            "status": "invalid event",
                            "message": "Event object is invalid",
                            "errors": errors,
                        },
                    )
                    return
                dedup = receiver._accept(doc)
                self._reply(
                    202, {"status": "success", "message": "Event processed", "dedup_key": dedup}
                )

            def do_GET(self) -> None:
                self._reply(405, {"status": "method not allowed", "message": "use POST"})

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return  # the live view reports pages; request logs would break its screen

        return Handler
