"""The server backend: a ClickHouse server over HTTP(S) through clickhouse-connect.

URL ``clickhouse://user@host:8123/driftline`` (``clickhouses://`` or ``store.secure`` for TLS,
default port 8443). The password is read from the environment variable named by
``store.password_env``, never from the URL. Statements are the ones the embedded backend
runs (:mod:`driftline.store.base`); batches are sent as an Arrow stream and read by the
server's ``input()`` table function, so the duplicate filter runs inside the INSERT.
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

from driftline.config import StoreSettings
from driftline.schemas.ddl import DATABASE
from driftline.store.base import (
    SkipExisting,
    Store,
    StoreError,
    StoreUnavailableError,
    StoreUrlError,
    check_identifier,
    error_from_message,
    format_params,
    insert_statement,
)


def parse_server_url(url: str, secure_default: bool = False) -> dict[str, Any]:
    """Connection arguments for a ``clickhouse://`` or ``clickhouses://`` URL.

    >>> parse_server_url("clickhouses://analyst@ch.example.com/driftline")
    {'host': 'ch.example.com', 'port': 8443, 'username': 'analyst', 'secure': True}
    >>> parse_server_url("clickhouse://localhost:8123")["port"]
    8123
    """
    parts = urlsplit(url)
    if parts.scheme not in ("clickhouse", "clickhouses"):
        raise StoreUrlError(f"{url!r}: a server URL starts with clickhouse:// or clickhouses://")
    if parts.password:
        raise StoreUrlError(
            f"{parts.scheme}://{parts.username}:***@...: put the password in the environment "
            "variable named by store.password_env, not in the URL"
        )
    if not parts.hostname:
        raise StoreUrlError(f"{url!r}: give a host, e.g. clickhouse://default@localhost:8123")
    database = parts.path.strip("/")
    if database and database != DATABASE:
        raise StoreUrlError(
            f"{url!r}: the schema lives in database {DATABASE!r}; use .../{DATABASE} or no path"
        )
    secure = parts.scheme == "clickhouses" or secure_default
    return {
        "host": parts.hostname,
        "port": parts.port or (8443 if secure else 8123),
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
            raise StoreUnavailableError(f"cannot reach ClickHouse at {url}: {exc}") from exc
        except DatabaseError as exc:
            raise error_from_message(str(exc)) from exc
        self._structures: dict[str, dict[str, str]] = {}
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
        if data.num_rows == 0:
            return
        types = self._column_types(table_name)
        structure = ", ".join(f"{check_identifier(c)} {types[c]}" for c in data.column_names)
        source = "input('" + structure.replace("\\", "\\\\").replace("'", "\\'") + "')"
        sql = insert_statement(
            table_name, data.column_names, source, data, dedup_token, skip_existing
        )
        body = io.BytesIO()
        with pa.ipc.new_stream(body, data.schema) as writer:
            writer.write_table(data)
        with _translated_errors(self.url):
            self._client.command(sql + "\nFORMAT ArrowStream", data=body.getvalue())

    def _column_types(self, table_name: str) -> dict[str, str]:
        if table_name not in self._structures:
            database, _, table = check_identifier(table_name).rpartition(".")
            result = self.query(
                "SELECT name, type FROM system.columns"
                " WHERE database = {db:String} AND table = {t:String}",
                {"db": database or DATABASE, "t": table},
            )
            names = result.column("name").to_pylist()
            if not names:
                raise StoreError(f"table {table_name} does not exist on {self.url}")
            self._structures[table_name] = dict(
                zip(names, result.column("type").to_pylist(), strict=True)
            )
        return self._structures[table_name]

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
