"""The store interface both backends implement, its errors, and the SQL they share.

Both backends build every statement with the functions here. Queries and commands reach an
embedded chdb session and a ClickHouse server as the same text. Inserts differ in how the batch
travels: chdb reads it from the caller's frame in one ``INSERT ... SELECT ... FROM
Python(batch)`` that also skips stored keys (:func:`insert_statement`); a server receives it as
the body of ``INSERT INTO t (cols) [SETTINGS token] FORMAT ArrowStream``
(:func:`insert_format_statement`), after the stored keys in the batch's time range were read
with :func:`stored_keys_statement` and dropped from it (:func:`without_stored`).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc


class StoreError(RuntimeError):
    """Base class of store failures."""


class StoreUnavailableError(StoreError):
    """The store could not be reached or failed transiently; retry later."""


class StoreQueryError(StoreError):
    """The store rejected a statement (syntax, unknown table, type mismatch): do not retry."""


class StoreRejectedRowsError(StoreQueryError):
    """The store refused an insert for the values of some of its rows, not for the statement.

    The same rows fail again however often they are sent; the other rows of the batch can be
    stored without them (the sink isolates the offending rows, ``streams/sink.py``).
    """


class TooManyPartitionsError(StoreRejectedRowsError):
    """One insert spanned more partitions than ``max_partitions_per_insert_block`` allows.

    ClickHouse reports it with the code of a transient overload (252, TOO_MANY_PARTS), but the
    same insert fails every time; the same rows in smaller inserts pass.
    """


class StoreUrlError(StoreError, ValueError):
    """A store URL that names no backend or is malformed (every command reports a
    :class:`StoreError` as a one-line error; it is a ``ValueError`` as well)."""


@dataclass(frozen=True, slots=True)
class SkipExisting:
    """Insert only rows whose key is not stored yet.

    ``key`` columns identify a row; ``range_column`` (part of the key, a timestamp) bounds the
    lookup of stored keys to the batch's own time range so it reads a few granules, not the table.
    """

    key: tuple[str, ...]
    range_column: str

    def __post_init__(self) -> None:
        if self.range_column not in self.key:
            raise ValueError(f"range_column {self.range_column!r} must be one of the key columns")


class Store(ABC):
    """A ClickHouse database: embedded (chdb) or a server (clickhouse-connect)."""

    url: str

    @abstractmethod
    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        """Run a SELECT; ``{name:Type}`` placeholders are filled from ``params``."""

    @abstractmethod
    def command(self, sql: str) -> None:
        """Run a statement that returns no rows (DDL, INSERT ... SELECT, OPTIMIZE)."""

    @abstractmethod
    def insert_arrow(
        self,
        table_name: str,
        data: pa.Table,
        dedup_token: str | None = None,
        *,
        skip_existing: SkipExisting | None = None,
    ) -> None:
        """Insert ``data`` (columns named as in the table) in one columnar insert.

        ``dedup_token``: ClickHouse drops a repeated insert with the same token (tables set
        ``non_replicated_deduplication_window``). ``skip_existing``: rows whose key is already
        stored are filtered out inside the same INSERT, before materialized views see them.
        """

    @abstractmethod
    def close(self) -> None:
        """Release the connection or session. Idempotent."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
_TOKEN_SAFE = re.compile(r"^[A-Za-z0-9_.:\-/]+$")


def check_identifier(name: str) -> str:
    """A table or column name, optionally ``db.table``; anything else is refused."""
    if not _IDENTIFIER.match(name):
        raise StoreQueryError(f"not a plain identifier: {name!r}")
    return name


def insert_statement(
    table_name: str,
    columns: Sequence[str],
    source: str,
    data: pa.Table,
    dedup_token: str | None,
    skip_existing: SkipExisting | None,
) -> str:
    """``INSERT INTO t (cols) [SETTINGS token] SELECT cols FROM <source> [WHERE new keys]``.

    >>> t = pa.table({"k": ["a", "b"], "ts": pa.array([0, 5], pa.timestamp("us", "UTC"))})
    >>> print(insert_statement("db.t", ["k", "ts"], "Python(batch)", t, "p0:1-2",
    ...                        SkipExisting(("k", "ts"), "ts")))
    INSERT INTO db.t (k, ts)
    SETTINGS insert_deduplication_token = 'p0:1-2'
    SELECT k, ts FROM Python(batch)
    WHERE (k, ts) NOT IN (SELECT k, ts FROM db.t
      WHERE ts BETWEEN toDateTime64('1970-01-01 00:00:00.000000', 6, 'UTC')
                   AND toDateTime64('1970-01-01 00:00:00.000005', 6, 'UTC'))
    """
    cols = ", ".join(check_identifier(c) for c in columns)
    lines = [_insert_head(table_name, columns, dedup_token)]
    lines.append(f"SELECT {cols} FROM {source}")
    if skip_existing is not None and data.num_rows:
        key = ", ".join(check_identifier(c) for c in skip_existing.key)
        stored = stored_keys_statement(table_name, data, skip_existing).splitlines()
        lines.append(f"WHERE ({key}) NOT IN ({stored[0]}")
        lines.append(f"  {stored[1]}")
        lines.append(f"  {stored[2]})")
    return "\n".join(lines)


def insert_format_statement(
    table_name: str, columns: Sequence[str], dedup_token: str | None, fmt: str
) -> str:
    """``INSERT INTO t (cols) [SETTINGS token] FORMAT fmt``: the rows follow in the body.

    >>> print(insert_format_statement("db.t", ["k", "ts"], "p0:1-2", "ArrowStream"))
    INSERT INTO db.t (k, ts)
    SETTINGS insert_deduplication_token = 'p0:1-2'
    FORMAT ArrowStream
    """
    return f"{_insert_head(table_name, columns, dedup_token)}\nFORMAT {check_identifier(fmt)}"


def _insert_head(table_name: str, columns: Sequence[str], dedup_token: str | None) -> str:
    check_identifier(table_name)
    cols = ", ".join(check_identifier(c) for c in columns)
    head = f"INSERT INTO {table_name} ({cols})"
    if dedup_token is None:
        return head
    if not _TOKEN_SAFE.match(dedup_token):
        raise StoreQueryError(
            f"dedup token has characters outside [A-Za-z0-9_.:-/]: {dedup_token!r}"
        )
    return f"{head}\nSETTINGS insert_deduplication_token = '{dedup_token}'"


def stored_keys_statement(table_name: str, data: pa.Table, skip_existing: SkipExisting) -> str:
    """The keys already stored in the time range of a (non-empty) batch.

    >>> t = pa.table({"k": ["a"], "ts": pa.array([5], pa.timestamp("us", "UTC"))})
    >>> print(stored_keys_statement("db.t", t, SkipExisting(("k", "ts"), "ts")))
    SELECT k, ts FROM db.t
    WHERE ts BETWEEN toDateTime64('1970-01-01 00:00:00.000005', 6, 'UTC')
                 AND toDateTime64('1970-01-01 00:00:00.000005', 6, 'UTC')
    """
    key = ", ".join(check_identifier(c) for c in skip_existing.key)
    bounds = pc.min_max(data.column(skip_existing.range_column))
    lo, hi = (_datetime_literal(bounds[b].as_py()) for b in ("min", "max"))
    pad = " " * len(f"WHERE {skip_existing.range_column} ")
    return "\n".join(
        (
            f"SELECT {key} FROM {check_identifier(table_name)}",
            f"WHERE {check_identifier(skip_existing.range_column)} BETWEEN {lo}",
            f"{pad}    AND {hi}",
        )
    )


def without_stored(data: pa.Table, stored: pa.Table, key: Sequence[str]) -> pa.Table:
    """The rows of ``data`` whose ``key`` is not among the rows of ``stored``, in order.

    >>> data = pa.table({"k": ["a", "b", "c"], "n": [1, 2, 3]})
    >>> without_stored(data, pa.table({"k": ["b", "x"]}), ["k"]).column("n").to_pylist()
    [1, 3]
    """
    if stored.num_rows == 0 or data.num_rows == 0:
        return data
    names = list(key)
    keys = data.select(names)
    # the store answers with its own types (dictionaries for LowCardinality): compare as sent
    stored_keys = stored.select(names).cast(keys.schema)
    row = pa.array(range(data.num_rows), pa.int64())
    new = keys.append_column("_row", row).join(stored_keys, keys=names, join_type="left anti")
    return data.filter(pc.is_in(row, value_set=new.column("_row").combine_chunks()))


def _datetime_literal(value: datetime) -> str:
    return f"toDateTime64('{format_datetime(value)}', 6, 'UTC')"


def format_datetime(value: datetime) -> str:
    """A datetime as ClickHouse parses a DateTime64(6) (naive values are taken as UTC)."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")


def format_param(value: Any) -> str:
    """A query parameter as the engine parses it (ClickHouse's escaped text form).

    A server receives the same text after HTTP decoding, so both backends see one value.

    >>> format_param(datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC))
    '2026-01-02 03:04:05.000006'
    >>> print(format_param({"support": 100.0, "it's": 2}))
    {'support': 100.0, 'it\\'s': 2}
    >>> backslash = chr(92)
    >>> format_param("a" + backslash + "b") == "a" + 2 * backslash + "b"
    True
    """
    if isinstance(value, str):
        return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        items = ", ".join(f"{_literal(k)}: {_literal(v)}" for k, v in value.items())
        return "{" + items + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    return str(value)


def _literal(value: Any) -> str:
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, datetime):
        return f"'{format_datetime(value)}'"
    return format_param(value)


def sql_literal(value: Any) -> str:
    """A value as a literal inside a statement: strings quoted, quotes and backslashes escaped.

    >>> print(sql_literal("it's"))
    'it\\'s'
    """
    return _literal(value)


def format_params(params: Mapping[str, Any] | None) -> dict[str, str]:
    """Every parameter as the engine's escaped text (what chdb takes)."""
    return {name: format_param(value) for name, value in (params or {}).items()}


# ClickHouse error codes that say "try again later" rather than "this statement is wrong".
_TRANSIENT_CODES = frozenset(
    {
        159,  # TIMEOUT_EXCEEDED
        202,  # TOO_MANY_SIMULTANEOUS_QUERIES
        209,  # SOCKET_TIMEOUT
        210,  # NETWORK_ERROR
        241,  # MEMORY_LIMIT_EXCEEDED
        242,  # TABLE_IS_READ_ONLY
        252,  # TOO_MANY_PARTS (merges behind inserts), unless about partitions: see below
        425,  # SYSTEM_ERROR
        1000,  # POCO_EXCEPTION
    }
)
# Codes an insert fails with because of the values it carries: the rows that hold them fail
# every time, the rest of the batch passes. Type mismatches are left out on purpose: they come
# from a schema that differs from the code, which every row would hit (a retry after the
# operator fixes it is better than rejecting the whole stream).
_ROW_VALUE_CODES = frozenset(
    {
        6,  # CANNOT_PARSE_TEXT
        27,  # CANNOT_PARSE_INPUT_ASSERTION_FAILED
        38,  # CANNOT_PARSE_DATE
        41,  # CANNOT_PARSE_DATETIME
        69,  # ARGUMENT_OUT_OF_BOUND
        72,  # CANNOT_PARSE_NUMBER
        117,  # INCORRECT_DATA
        131,  # TOO_LARGE_STRING_SIZE
        321,  # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
        349,  # CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN (e.g. a null value in a map)
        395,  # FUNCTION_THROW_IF_VALUE_IS_NON_ZERO (a throwIf in a materialized view)
        407,  # DECIMAL_OVERFLOW
        469,  # VIOLATED_CONSTRAINT (a CHECK constraint an operator added)
    }
)
_TOO_MANY_PARTITIONS = re.compile(r"too many partitions for (a )?single insert", re.IGNORECASE)
_CODE = re.compile(r"Code: (\d+)")


def error_from_message(message: str) -> StoreError:
    """The store error for a ClickHouse exception text: transient, rows refused, or statement.

    >>> type(error_from_message("Code: 252. DB::Exception: Too many parts (300)")).__name__
    'StoreUnavailableError'
    >>> type(error_from_message(
    ...     "Code: 252. DB::Exception: Too many partitions for single INSERT block (more than 100)"
    ... )).__name__
    'TooManyPartitionsError'
    >>> type(error_from_message("Code: 469. DB::Exception: Constraint `c` is violated")).__name__
    'StoreRejectedRowsError'
    >>> type(error_from_message("Code: 62. DB::Exception: Syntax error")).__name__
    'StoreQueryError'
    """
    match = _CODE.search(message)
    code = int(match.group(1)) if match else None
    if code == 252 and _TOO_MANY_PARTITIONS.search(message):
        return TooManyPartitionsError(message)
    if code in _TRANSIENT_CODES:
        return StoreUnavailableError(message)
    if code in _ROW_VALUE_CODES:
        return StoreRejectedRowsError(message)
    return StoreQueryError(message)
