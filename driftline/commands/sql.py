"""``driftline sql QUERY``: analyst SQL against the store, or a query from the library.

QUERY is SQL, or the name of a file in ``schemas/queries/`` (``driftline sql cost_by_workflow
--param from=2026-01-01 --param to=2026-01-08``). Only reading statements run unless
``--write`` is given; in server mode, give analysts a read-only ClickHouse user as well.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import pyarrow as pa

from driftline.config import ConfigError, load_settings

EXIT_OK = 0
EXIT_QUERY_FAILED = 1
EXIT_UNUSABLE = 2
_READING = ("SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS", "(")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("query", metavar="QUERY", help="SQL, or a query name from schemas/queries")
    parser.add_argument("--format", choices=("pretty", "csv", "json"), default="pretty")
    parser.add_argument(
        "--store", metavar="URL", help="store URL (default: store.url from the configuration)"
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
    from driftline.store import StoreError, StoreQueryError, open_store
    from driftline.store.queries import load_query, query_defaults, query_names, query_params

    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
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
    if not args.write and not _is_reading(sql):
        print(
            "driftline sql: only SELECT/WITH/SHOW/DESCRIBE/EXPLAIN run without --write",
            file=sys.stderr,
        )
        return EXIT_UNUSABLE
    url, store_settings = args.store, settings.store
    if url is None and not args.write and settings.store.reader_url:
        # Analysts read as the read-only user; --write and --store choose for themselves.
        url = settings.store.reader_url
        store_settings = settings.store.model_copy(
            update={"password_env": settings.store.reader_password_env}
        )
    try:
        store = open_store(url, store_settings, read_only=not args.write)
    except StoreError as exc:
        print(f"driftline sql: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    try:
        if _is_reading(sql):
            table = store.query(sql, params)
        else:
            store.command(sql)
            return EXIT_OK
    except StoreQueryError as exc:
        print(f"driftline sql: {exc}", file=sys.stderr)
        return EXIT_QUERY_FAILED
    except StoreError as exc:
        print(f"driftline sql: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    finally:
        store.close()
    sys.stdout.write(render(table, args.format))
    return EXIT_OK


def _is_reading(sql: str) -> bool:
    code = "\n".join(line.split("--", 1)[0] for line in sql.splitlines()).lstrip()
    return code.upper().startswith(_READING)


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
        return "".join(json.dumps(r, default=str) + "\n" for r in rows)
    if fmt == "csv":
        import csv
        import io

        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(table.column_names)
        for r in rows:
            writer.writerow(["" if v is None else v for v in r.values()])
        return out.getvalue()
    names = table.column_names
    cells = [[_cell(r[n]) for n in names] for r in rows]
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
    return str(value)
