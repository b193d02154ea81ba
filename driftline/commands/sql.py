"""``driftline sql QUERY``: analyst SQL against the store, or a query from the library.

QUERY is SQL, or the name of a file in ``schemas/queries/`` (``driftline sql cost_by_workflow
--param from=2026-01-01 --param to=2026-01-08``). Without ``--write`` the engine itself decides
that a query only reads (:func:`reading_refusal`); in server mode, give analysts a read-only
ClickHouse user as well (``store.reader_url``). A reading run never creates, migrates or
alters a store: a path that holds no store is an error.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import re
import sys
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

import pyarrow as pa

from driftline.commands.terminal import escape_controls, print_config_error
from driftline.config import ConfigError, StoreSettings, load_settings

if TYPE_CHECKING:
    from driftline.store import Store

EXIT_OK = 0
EXIT_QUERY_FAILED = 1
EXIT_UNUSABLE = 2
_READING = ("SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS", "(")
# Table functions that only compute rows; every other one reads files, URLs, object stores,
# other servers or this process's memory (chdb's Python()).
_HARMLESS_TABLE_FUNCTIONS: Final = frozenset(
    {"numbers", "numbers_mt", "zeros", "zeros_mt", "generate_series", "generateseries"}
    | {"values", "view", "null", "generaterandom", "merge"}
)
# Functions that read local files wherever they appear.
_FILE_FUNCTIONS: Final = frozenset({"file"})
_AST_FUNCTION: Final = re.compile(r"^(\s*)Function (\w+)")
# The engine's words when a statement is not one plain SELECT (EXPLAIN in a subquery).
_NOT_A_SELECT: Final = ("supports only SELECT queries", "cannot have output options")
_READONLY_CODE: Final = 164  # READONLY: this user may not run the statement
# A QUERY that is one word names a library query: it is never run as SQL.
_QUERY_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
# The engine's error code, when the engine ran the statement and reported why it failed.
_ENGINE_CODE: Final = re.compile(r"Code: (\d+)\.")
# Codes that say the store could not be reached, not that the query failed in it.
_UNREACHABLE_CODES: Final = frozenset({209, 210, 1000})  # socket timeout, network, Poco
# A CSV cell a spreadsheet would read as a formula (OWASP, CSV injection): =, +, - and @,
# and the tab and carriage return some spreadsheets skip before one.
_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")
FORMAT_HELP: Final = (
    "pretty (aligned columns) or csv, both with control characters shown escaped "
    "(ESC as \\x1b; in csv, text starting with = + - @ gets a leading ' so a spreadsheet "
    "does not run it as a formula), or json (one object per row; NaN and infinities are null)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "query", metavar="QUERY", nargs="?", help="SQL, or a query name from schemas/queries"
    )
    parser.add_argument(
        "--list", action="store_true", help="list the library's query names and parameters"
    )
    parser.add_argument(
        "--format", choices=("pretty", "csv", "json"), default="pretty", help=FORMAT_HELP
    )
    parser.add_argument(
        "--store",
        metavar="URL",
        help="store URL (default: store.reader_url when set and without --write, else "
        "store.url; the store must exist)",
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="value for a {NAME:Type} placeholder (repeatable)",
    )
    parser.add_argument("--write", action="store_true", help="allow statements that change data")


def run(args: argparse.Namespace) -> int:
    from driftline.store import StoreError, open_store
    from driftline.store.queries import load_query, query_defaults, query_names, query_params

    if args.list:
        sys.stdout.write(library_listing())
        return EXIT_OK
    if not args.query:
        print("driftline sql: give QUERY (SQL or a query name), or --list", file=sys.stderr)
        return EXIT_UNUSABLE
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print_config_error(exc)
        return EXIT_UNUSABLE
    params: dict[str, Any] = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep or not name:
            print(f"driftline sql: --param {item!r}: write NAME=VALUE", file=sys.stderr)
            return EXIT_UNUSABLE
        params[name] = value
    sql = args.query
    if args.query in query_names():
        sql = load_query(args.query)
        params = {**query_defaults(sql), **params}
        missing = sorted(set(query_params(sql)) - set(params))
        if missing:
            needed = " ".join(f"--param {name}=..." for name in missing)
            print(f"driftline sql: query {args.query!r} needs {needed}", file=sys.stderr)
            return EXIT_UNUSABLE
    elif _QUERY_NAME.fullmatch(args.query.strip()):
        print(f"driftline sql: {unknown_query_message(args.query.strip())}", file=sys.stderr)
        return EXIT_UNUSABLE
    unknown = sorted(set(params) - set(query_params(sql)))
    if unknown:
        declared = ", ".join(sorted(query_params(sql))) or "none"
        print(
            f"driftline sql: --param {', '.join(unknown)}: the query has no such placeholder "
            f"(its parameters: {declared})",
            file=sys.stderr,
        )
        return EXIT_UNUSABLE
    for name, type_ in query_params(sql).items():
        if name in params and (problem := integer_param_problem(type_, params[name])):
            print(f"driftline sql: --param {name}: {problem}", file=sys.stderr)
            return EXIT_UNUSABLE
    url, store_settings = store_target(args.store, settings.store, writing=args.write)
    try:
        store = open_store(url, store_settings, read_only=not args.write)
    except StoreError as exc:
        print(f"driftline sql: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    try:
        if not args.write:
            refusal = reading_refusal(store, sql, params)
            if refusal:
                print(f"driftline sql: {refusal}", file=sys.stderr)
                return EXIT_UNUSABLE
            table = store.query(sql, params)
        elif _is_reading(sql):  # only picks how to run it: --write allows anything
            table = store.query(sql, params)
        else:
            store.command(sql)
            return EXIT_OK
    except StoreError as exc:
        print(f"driftline sql: {exc}", file=sys.stderr)
        return EXIT_QUERY_FAILED if _query_failed(exc) else EXIT_UNUSABLE
    finally:
        store.close()
    sys.stdout.write(render(table, args.format))
    return EXIT_OK


def _query_failed(exc: Exception) -> bool:
    """Whether the engine ran the statement and it failed (exit 1), not an unusable store.

    A limit hit at run time (``max_execution_time``, memory) is a failed query, although the
    store reports it as "retry later".

    >>> _query_failed(RuntimeError("Code: 159. DB::Exception: Timeout exceeded"))
    True
    >>> _query_failed(RuntimeError("Code: 210. DB::NetException: Connection refused"))
    False
    """
    from driftline.store import StoreQueryError

    if isinstance(exc, StoreQueryError):
        return True
    code = engine_code(str(exc))
    return code is not None and code not in _UNREACHABLE_CODES


def store_target(
    explicit: str | None, settings: StoreSettings, *, writing: bool
) -> tuple[str, StoreSettings]:
    """The URL a run connects to, with the settings that carry its password variable.

    Analysts read as the read-only user (``store.reader_url``); ``--store`` and ``--write``
    choose for themselves.

    >>> store_target(None, StoreSettings(reader_url="clickhouse://ro@h/db"), writing=False)[0]
    'clickhouse://ro@h/db'
    >>> store_target(None, StoreSettings(reader_url="clickhouse://ro@h/db"), writing=True)[0]
    'chdb://var/chdb'
    """
    if explicit is not None:
        return explicit, settings
    if not writing and settings.reader_url:
        return settings.reader_url, settings.model_copy(
            update={"password_env": settings.reader_password_env}
        )
    return settings.url, settings


def unknown_query_message(name: str) -> str:
    """What to say for a one-word QUERY that names no library query (never run as SQL)."""
    from driftline.store.queries import query_names

    close = difflib.get_close_matches(name, query_names(), n=3, cutoff=0.8)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    return f"no query named {name!r} in schemas/queries; {hint}`driftline sql --list` lists them"


def library_listing() -> str:
    """One line per library query: its name, parameters (optional ones in brackets), purpose."""
    from driftline.store.queries import load_query, query_defaults, query_names, query_params

    lines = []
    for name in query_names():
        sql = load_query(name)
        optional = query_defaults(sql)
        params = " ".join(
            f"[{p}]" if p in optional else p for p in sorted(query_params(sql), key=str)
        )
        first = next((ln for ln in sql.splitlines() if ln.startswith("--")), "--")
        lines.append(f"{name}  ({params or 'no parameters'})  {first.lstrip('-').strip()}\n")
    return "".join(lines)


def _is_reading(sql: str) -> bool:
    code = "\n".join(line.split("--", 1)[0] for line in sql.splitlines()).lstrip()
    return code.upper().startswith(_READING)


_INTEGER_TYPE = re.compile(r"(U?)Int(8|16|32|64)")
_WRAPPER_TYPE = re.compile(r"(?:Nullable|LowCardinality)\((.*)\)")


def integer_param_problem(type_: str, value: str) -> str | None:
    """Why ``value`` is no ``type_`` when that is an integer type, else None: the embedded
    engine wraps an integer out of range (999999 as UInt8 is 63) where a server refuses it.

    >>> integer_param_problem("UInt8", "999999"), integer_param_problem("Int64", "-5")
    ('999999 is outside UInt8 (0 to 255)', None)
    >>> integer_param_problem("UInt32", "1e3"), integer_param_problem("String", "x")
    ("'1e3' is not a whole number", None)
    >>> integer_param_problem("Nullable(UInt8)", "999999")
    '999999 is outside UInt8 (0 to 255)'
    """
    inner = type_.strip()
    while (wrapped := _WRAPPER_TYPE.fullmatch(inner)) is not None:
        inner = wrapped.group(1).strip()  # Nullable(UInt8) wraps as UInt8 does
    match = _INTEGER_TYPE.fullmatch(inner)
    if match is None:
        return None
    if inner != type_.strip() and value.strip().upper() == "NULL":
        return None
    try:
        number = int(value.strip())
    except ValueError:
        return f"{value[:40]!r} is not a whole number"
    bits = int(match.group(2))
    low, high = (0, 2**bits - 1) if match.group(1) else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    if not low <= number <= high:
        return f"{number} is outside {inner} ({low} to {high})"
    return None


def reading_refusal(store: Store, sql: str, params: dict[str, Any]) -> str | None:
    """Why ``sql`` may not run without ``--write``, or None when it only reads.

    The engine decides, not the text: an embedded session is switched to ``readonly = 2``
    for good (no writes, no DDL, no changing ``readonly`` back; the command's process ends
    after this one query, so nothing else writes through it); the engine's parser must see
    exactly one statement; EXPLAIN in a subquery accepts only a plain SELECT, without FORMAT
    or INTO OUTFILE; and its syntax tree must call no function that reads files, URLs or
    other servers (``readonly`` alone still lets ``file()`` read a local file).
    """
    from driftline.store import ChdbStore, StoreQueryError

    if isinstance(store, ChdbStore):
        store.command("SET readonly = 2")
    try:
        formatted = store.query("SELECT formatQuery({sql:String}) AS q", {"sql": sql})
    except StoreQueryError as exc:
        return f"not one statement the engine can parse: {exc}"
    one_statement = str(formatted.column("q")[0])
    try:
        tree = store.query(f"SELECT explain FROM (EXPLAIN AST {one_statement})", params)
    except StoreQueryError as exc:
        message = str(exc)
        if any(words in message for words in _NOT_A_SELECT):
            return (
                "only one SELECT (or WITH ... SELECT) runs without --write; for SHOW or "
                "DESCRIBE, query system.tables and system.columns"
            )
        if engine_code(message) == _READONLY_CODE and not isinstance(store, ChdbStore):
            return None  # a server's read-only user may not EXPLAIN; its grants hold instead
        raise
    return _forbidden_function([str(line) for line in tree.column("explain").to_pylist()])


def engine_code(message: str) -> int | None:
    """The code of an engine error: the first ``Code: N.``, which ClickHouse writes before
    its message. Text quoted from the query (a setting's name, a cut literal) comes after
    it, so a query cannot pass for another error by spelling one.

    >>> engine_code("Code: 115. DB::Exception: Unknown setting 'Code: 164.'")
    115
    >>> engine_code("HTTP 500\\nCode: 164. DB::Exception: Cannot execute query in readonly mode")
    164
    >>> engine_code("connection reset") is None
    True
    """
    match = _ENGINE_CODE.search(message)
    return int(match.group(1)) if match else None


def _forbidden_function(ast_lines: list[str]) -> str | None:
    """A refusal naming the first function in ``EXPLAIN AST`` output that reaches outside."""
    after_table: int | None = None  # indent of the TableExpression just seen
    for line in ast_lines:
        match = _AST_FUNCTION.match(line)
        if match:
            name = match.group(2)
            table_function = after_table is not None and len(match.group(1)) == after_table + 1
            if name.lower() in _FILE_FUNCTIONS or (
                table_function and name.lower() not in _HARMLESS_TABLE_FUNCTIONS
            ):
                return f"{name}() reads outside the store; it runs only with --write"
        stripped = line.lstrip()
        after_table = len(line) - len(stripped) if stripped.startswith("TableExpression") else None
    return None


def render(table: pa.Table, fmt: str) -> str:
    """A result as text: aligned columns, CSV with a header, or one JSON object per row.

    >>> t = pa.table({"workflow": ["a", "bb"], "spend_usd": [1.5, None]})
    >>> print(render(t, "pretty"), end="")
    workflow  spend_usd
    --------  ---------
    a               1.5
    bb             NULL
    (2 rows)
    >>> print(render(t, "csv"), end="")
    workflow,spend_usd
    a,1.5
    bb,
    >>> print(render(t, "json"), end="")
    {"workflow": "a", "spend_usd": 1.5}
    {"workflow": "bb", "spend_usd": null}
    """
    rows = table.to_pylist()
    if fmt == "json":
        return "".join(json.dumps(_finite(r), default=str, allow_nan=False) + "\n" for r in rows)
    if fmt == "csv":
        import csv
        import io

        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([csv_cell(n) for n in table.column_names])
        for r in rows:
            writer.writerow([csv_cell(v) for v in r.values()])
        return out.getvalue()
    names = [escape_controls(n) for n in table.column_names]
    cells = [[_cell(r[n]) for n in table.column_names] for r in rows]
    widths = [max([len(n)] + [len(row[i]) for row in cells]) for i, n in enumerate(names)]
    numeric = [
        pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
        for t in table.schema.types
    ]

    def line(values: list[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip() + "\n"

    text = line(names) + line(["-" * w for w in widths])
    text += "".join(line(row) for row in cells)
    return text + f"({len(rows)} row{'s' if len(rows) != 1 else ''})\n"


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.10g}"
    return escape_controls(str(value))


def csv_cell(value: Any) -> str:
    r"""A CSV cell: numbers as they are, text with its control characters escaped and, when
    it starts as a formula would (``=``, ``+``, ``-``, ``@``, tab, carriage return), after a
    single quote, so a spreadsheet shows a stored value instead of running it (OWASP's
    advice on CSV injection). A negative number is a number, not text.

    >>> [csv_cell(v) for v in ("=1+1", "-2", "@SUM(A1)", "\tx", "a=b", -2, -1.5, None)]
    ["'=1+1", "'-2", "'@SUM(A1)", "'\\x09x", 'a=b', '-2', '-1.5', '']
    """
    if value is None:
        return ""
    if isinstance(value, bool | int | float | Decimal):
        return str(value)
    raw = str(value)
    text = escape_controls(raw)
    return f"'{text}" if raw.startswith(_FORMULA_START) else text


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float, at any depth, as None (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
