"""A ClickHouse HTTP interface served from chdb, so clickhouse-connect runs against the real engine.

No ClickHouse server runs on the test machines. This threaded HTTP server speaks the part of
ClickHouse's HTTP protocol that clickhouse-connect uses for queries, commands and inserts, and
executes every statement on a chdb session (the same engine as the embedded store):

- ``GET /ping`` -> ``Ok.``;
- ``POST /?query=...`` (or the statement in the body): output in the statement's ``FORMAT``
  clause, else ``default_format``, else TabSeparated; ``param_<name>`` URL arguments fill
  ``{name:Type}`` placeholders; errors are HTTP 500 with ``X-ClickHouse-Exception-Code``;
- ``INSERT INTO t [(cols)] [SETTINGS ...] FORMAT <fmt>`` with the rows in the body, the
  statement in the URL or at the start of the body (clickhouse-connect's ``insert``,
  ``raw_insert``, ``insert_arrow``, ``command(..., data=...)``), streamed into chdb as sent:
  chdb's streaming insert takes the statement and its format as two arguments, so the trailing
  ``FORMAT <fmt>`` is split off and passed as the second; nothing else is changed. A statement
  chdb cannot stream (``INSERT ... SELECT ... FROM input(...)``) fails as it would on chdb.
  ``ArrowStream`` bodies are the exception: chdb's streaming insert loses a block the engine
  refuses (too many partitions, a violated constraint) while reporting its rows as written,
  where a server answers with the error. They run as the same statement head followed by
  ``SELECT * FROM Python(rows)``, which raises the engine's error as a server would.

Settings in the URL are not applied (the chdb session has no per-request settings): a client
must put what matters for the result in the statement. ``insert_deduplication_token`` and
``insert_deduplicate`` in the URL are refused with an error, so that an insert relying on them
cannot pass here and behave differently on a server.

Request bodies compressed with gzip, deflate or lz4 (frame) are decompressed (zstd too when the
zstandard package is installed). Responses are never compressed (clickhouse-connect accepts
that). ``fail_with(code)`` makes the server answer every request with an error until
``recover()``, to exercise retry paths; ``stop()`` takes it down entirely.
``lose_insert_responses(n)`` runs the next ``n`` inserts and closes their connections without
an answer (an insert that succeeded, whose response was lost); ``hang_inserts(n, seconds)``
holds the next ``n`` inserts that long before running them (a server that hangs, not refuses:
the insert may still land after the client gave up). The chdb session
belongs to the caller (one per process).
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import re
import socket
import threading
import time
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pyarrow as pa
from chdb import session as chdb_session

_FORMAT_CLAUSE = re.compile(r"\bFORMAT\s+([A-Za-z0-9_]+)\s*;?\s*$", re.IGNORECASE)
_UNAPPLIED_URL_SETTINGS = ("insert_deduplication_token", "insert_deduplicate")
_INSERT = re.compile(r"^\s*INSERT\s+INTO\b", re.IGNORECASE)
_CODE = re.compile(r"Code: (\d+)")
_TEXT_FORMATS = {
    "TabSeparated",
    "TSV",
    "JSON",
    "JSONEachRow",
    "CSV",
    "CSVWithNames",
    "TabSeparatedWithNames",
    "TSVWithNames",
    "Pretty",
    "JSONCompact",
}


def _decompress(body: bytes, encoding: str) -> bytes:
    encoding = encoding.lower().strip()
    if not encoding or encoding == "identity":
        return body
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding == "lz4":
        import lz4.frame

        return bytes(lz4.frame.decompress(body))
    if encoding == "zstd":
        import zstandard

        return bytes(zstandard.ZstdDecompressor().decompressobj().decompress(body))
    raise ValueError(f"unsupported Content-Encoding {encoding!r}")


_BODY_INSERT = re.compile(
    rb"^\s*(INSERT\s+INTO\b.*?\bFORMAT\s+[A-Za-z0-9_]+)[ \t]*\r?\n?", re.IGNORECASE | re.DOTALL
)


def _split_body(body: bytes) -> tuple[str, bytes]:
    """The statement at the start of a body and the data after it (``INSERT ... FORMAT X``)."""
    match = _BODY_INSERT.match(body)
    if match is None:
        return body.decode("utf-8"), b""
    return match.group(1).decode("utf-8"), body[match.end() :]


class ChdbHttpServer:
    """Serve ``session`` over ClickHouse's HTTP protocol on 127.0.0.1:``port`` (0: any free)."""

    def __init__(self, session: chdb_session.Session, port: int = 0) -> None:
        self.session = session
        self.requests: list[str] = []  # statements received, for assertions
        self._lock = threading.Lock()  # chdb runs one statement at a time per session
        self._failure: tuple[int, str] | None = None
        self._lose_responses = 0  # inserts still to run without answering
        self._hangs: list[float] = []  # seconds to hold each of the next inserts
        self.connections: set[socket.socket] = set()  # open keep-alive connections
        self.users: list[str] = []  # the user of each request (credentials are not checked)
        handler = _handler_for(self)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ChdbHttpServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and drop open keep-alive connections, as a server going down does."""
        self._httpd.shutdown()
        self._httpd.server_close()
        for connection in list(self.connections):
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def fail_with(self, code: int = 210, message: str = "simulated outage") -> None:
        """Answer every request with ClickHouse error ``code`` until :meth:`recover`."""
        self._failure = (code, message)

    def recover(self) -> None:
        self._failure = None

    def lose_insert_responses(self, count: int = 1) -> None:
        """Run the next ``count`` inserts, then drop their connections without a response."""
        self._lose_responses = count

    def hang_inserts(self, count: int, seconds: float) -> None:
        """Hold each of the next ``count`` inserts for ``seconds`` before running it."""
        self._hangs = [seconds] * count

    def _take(self, sql: str) -> tuple[float, bool]:
        """For an insert: how long to hold it, and whether to lose its response."""
        if not _INSERT.match(sql):
            return 0.0, False
        with self._lock:
            hang = self._hangs.pop(0) if self._hangs else 0.0
            lose = self._lose_responses > 0
            self._lose_responses -= int(lose)
        return hang, lose

    def __enter__(self) -> ChdbHttpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- execution ----------------------------------------------------------------------

    def execute(self, sql: str, body: bytes, args: dict[str, str]) -> tuple[bytes, str]:
        """Run one request; return (response body, output format)."""
        self.requests.append(sql)
        if self._failure is not None:
            code, message = self._failure
            raise RuntimeError(f"Code: {code}. DB::Exception: {message}. (NETWORK_ERROR)")
        unapplied = [name for name in _UNAPPLIED_URL_SETTINGS if name in args]
        if unapplied:
            raise RuntimeError(
                f"Code: 115. DB::Exception: chdb-http does not apply URL settings {unapplied}; "
                "put them in the statement's SETTINGS clause"
            )
        params = {k[len("param_") :]: v for k, v in args.items() if k.startswith("param_")}
        match = _FORMAT_CLAUSE.search(sql)
        fmt = match.group(1) if match else args.get("default_format", "TabSeparated")
        with self._lock:
            if _INSERT.match(sql) and body:
                assert match is not None, "an INSERT with a body needs a FORMAT clause"
                statement = sql[: match.start()].rstrip()
                if fmt == "ArrowStream":
                    self._insert_arrow_stream(statement, body)
                    return b"", fmt
                with self.session.send_insert(statement, fmt) as inserter:
                    inserter.append(body)
                    inserter.finish()
                return b"", fmt
            result = self.session.query(sql, fmt, params=params or None)
            return result.bytes(), fmt

    def _insert_arrow_stream(self, statement: str, body: bytes) -> None:
        # chdb's Python() table function reads the local variable named `rows` from this frame.
        rows = pa.ipc.open_stream(body).read_all()  # noqa: F841
        self.session.query(f"{statement}\nSELECT * FROM Python(rows)")


def _user_of(headers: Any) -> str:
    """The user a ClickHouse HTTP client authenticates as (header or basic auth)."""
    if user := headers.get("X-ClickHouse-User"):
        return str(user)
    auth = headers.get("Authorization") or ""
    if auth.startswith("Basic "):
        return base64.b64decode(auth[6:]).decode("utf-8", "replace").split(":", 1)[0]
    return "default"


def _handler_for(server: ChdbHttpServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def setup(self) -> None:
            super().setup()
            server.connections.add(self.connection)

        def finish(self) -> None:
            server.connections.discard(self.connection)
            with contextlib.suppress(OSError):
                super().finish()

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if parts.path in ("/ping", "/"):
                args = dict(parse_qsl(parts.query, keep_blank_values=True))
                if "query" not in args:
                    self._reply(200, b"Ok.\n", {})
                    return
            self._serve(b"")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                body = self._read_chunked()
            body = _decompress(body, self.headers.get("Content-Encoding", ""))
            self._serve(body)

        def _read_chunked(self) -> bytes:
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()

        def _serve(self, body: bytes) -> None:
            server.users.append(_user_of(self.headers))
            parts = urlsplit(self.path)
            args = dict(parse_qsl(parts.query, keep_blank_values=True))
            if "query" in args:
                sql = args["query"]
            else:
                sql, body = _split_body(body)
            query_id = args.get("query_id") or str(uuid.uuid4())
            started = time.perf_counter()
            hang_s, lose = server._take(sql)
            time.sleep(hang_s)
            try:
                data, fmt = server.execute(sql, body, args)
            except Exception as exc:  # every engine error goes back as ClickHouse would send it
                message = str(exc)
                code = _CODE.search(message)
                self._reply(
                    500,
                    (message + "\n").encode(),
                    {
                        "X-ClickHouse-Exception-Code": code.group(1) if code else "1001",
                        "X-ClickHouse-Query-Id": query_id,
                    },
                )
                return
            if lose:  # the insert ran; its answer never reaches the client
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            elapsed_ns = int((time.perf_counter() - started) * 1e9)
            headers = {
                "X-ClickHouse-Query-Id": query_id,
                "X-ClickHouse-Timezone": "UTC",
                "X-ClickHouse-Server-Display-Name": "chdb-http",
                "X-ClickHouse-Summary": json.dumps(
                    {"read_rows": "0", "written_rows": "0", "elapsed_ns": str(elapsed_ns)}
                ),
                "Content-Type": "text/plain; charset=UTF-8"
                if fmt in _TEXT_FORMATS
                else "application/octet-stream",
            }
            if data or not _INSERT.match(sql):
                headers["X-ClickHouse-Format"] = fmt
            self._reply(200, data, headers)

        def _reply(self, status: int, data: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler
