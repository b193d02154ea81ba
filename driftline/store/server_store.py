"""The server backend: a ClickHouse server over HTTP(S) through clickhouse-connect.

URL ``clickhouse://user@host:8123/driftline`` (``clickhouses://`` or ``store.secure`` for TLS,
default port 8443). The password is read from the environment variable named by
``store.password_env``, never from the URL. Queries and commands are the ones the embedded
backend runs (:mod:`driftline.store.base`). A batch is the Arrow stream body of ``INSERT INTO t
(cols) [SETTINGS insert_deduplication_token = ...] FORMAT ArrowStream``, a statement the server
runs as sent. Keys already stored in the batch's time range are read first and dropped from
the batch. Two writers inserting the same span at the same moment can both find it absent, as
they could inside one ``INSERT ... SELECT ... WHERE key NOT IN``; the raw tables still collapse
it (0001_init.sql, "Exactness under re-delivery", layer 3).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

import clickhouse_connect
import pyarrow as pa
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from driftline.config import StoreSettings, redacted_url, refuse_credentials
from driftline.schemas.ddl import DATABASE
from driftline.store.base import (
    SkipExisting,
    Store,
    StoreUnavailableError,
    StoreUrlError,
    error_from_message,
    format_params,
    insert_format_statement,
    stored_keys_statement,
    without_stored,
)


def parse_server_url(url: str, secure_default: bool = False) -> dict[str, Any]:
    """Connection arguments for a ``clickhouse://`` or ``clickhouses://`` URL.

    >>> parse_server_url("clickhouses://analyst@ch.example.com/driftline")
    {'host': 'ch.example.com', 'port': 8443, 'username': 'analyst', 'secure': True}
    >>> parse_server_url("clickhouse://localhost:8123")["port"]
    8123
    """
    shown = redacted_url(url)  # errors never repeat a secret the URL might carry
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # a port out of range or not a number, a broken IPv6 host
        raise StoreUrlError(f"{shown}: not a server URL ({exc})") from None
    if parts.scheme not in ("clickhouse", "clickhouses"):
        raise StoreUrlError(f"{shown}: a server URL starts with clickhouse:// or clickhouses://")
    if parts.password:
        raise StoreUrlError(
            f"{parts.scheme}://{parts.username}:***@...: put the password in the environment "
            "variable named by store.password_env, not in the URL"
        )
    try:
        refuse_credentials(url, "put the password in store.password_env's variable", users=True)
    except ValueError as exc:
        raise StoreUrlError(f"{shown}: {exc}") from None
    if not parts.hostname:
        raise StoreUrlError(f"{shown}: give a host, e.g. clickhouse://default@localhost:8123")
    database = parts.path.strip("/")
    if database and database != DATABASE:
        raise StoreUrlError(
            f"{shown}: the schema lives in database {DATABASE!r}; use .../{DATABASE} or no path"
        )
    secure = parts.scheme == "clickhouses" or secure_default
    return {
        "host": parts.hostname,
        "port": port or (8443 if secure else 8123),
        "username": unquote(parts.username or "default"),
        "secure": secure,
    }


class ServerStore(Store):
    """A store on a ClickHouse server."""

    def __init__(self, url: str, settings: StoreSettings, **client_options: Any) -> None:
        self.url = url
        options = parse_server_url(url, settings.secure)
        try:
            self._client = clickhouse_connect.get_client(
                **options, password=settings.password or "", **client_options
            )
        except OperationalError as exc:
            raise StoreUnavailableError(
                f"cannot reach ClickHouse at {redacted_url(url)}: {exc}"
            ) from exc
        except DatabaseError as exc:
            raise error_from_message(str(exc)) from exc
        self._closed = False

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        with _translated_errors(self.url):
            table = self._client.query_arrow(sql, parameters=_bound(params), use_strings=True)
        return table

    def command(self, sql: str) -> None:
        with _translated_errors(self.url):
            self._client.command(sql)

    def insert_arrow(
        self,
        table_name: str,
        data: pa.Table,
        dedup_token: str | None = None,
        *,
        skip_existing: SkipExisting | None = None,
    ) -> None:
        if skip_existing is not None and data.num_rows:
            stored = self.query(stored_keys_statement(table_name, data, skip_existing))
            data = without_stored(data, stored, skip_existing.key)
        if data.num_rows == 0:
            return
        sql = insert_format_statement(table_name, data.column_names, dedup_token, "ArrowStream")
        body = io.BytesIO()
        with pa.ipc.new_stream(body, data.schema) as writer:
            writer.write_table(data)
        with _translated_errors(self.url):
            self._client.command(sql, data=body.getvalue())

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._client.close()


class _EngineText:
    """A parameter already in the engine's text form: clickhouse-connect sends str(value) as is."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text


def _bound(params: Mapping[str, Any] | None) -> dict[str, _EngineText]:
    # clickhouse-connect would escape strings again, render dicts as JSON and drop the
    # microseconds of datetimes; pass the same text the embedded backend gets.
    return {name: _EngineText(text) for name, text in format_params(params).items()}


@contextlib.contextmanager
def _translated_errors(url: str) -> Iterator[None]:
    """clickhouse-connect's exceptions as store errors: transient ones say "retry later"."""
    try:
        yield
    except OperationalError as exc:
        raise StoreUnavailableError(f"ClickHouse at {url} unavailable: {exc}") from exc
    except DatabaseError as exc:
        raise error_from_message(str(exc)) from exc
