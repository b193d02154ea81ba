"""``driftline load EVENTS.ndjson [--traces FILE]``: load normalized events into the store.

EVENTS is NDJSON as ``driftline normalize`` prints it (``--traces`` as it writes trace
summaries). Rows go through the same sink as the stream worker, so loading a file twice
leaves every total unchanged. Rates of the models seen are written for the cache-savings query.
Exit status: 0 all loaded, 1 some lines rejected (listed on stderr), 2 unusable input or store.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from driftline.config import ConfigError, load_settings
from driftline.schemas.event import EVENT_FIELDS, TRACE_FIELDS, Field, from_wire

EXIT_OK = 0
EXIT_SOME_REJECTED = 1
EXIT_UNUSABLE = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("events", metavar="EVENTS", help="NDJSON of normalized events")
    parser.add_argument("--traces", metavar="FILE", help="NDJSON of trace summaries")
    parser.add_argument(
        "--store", metavar="URL", help="store URL (default: store.url from the configuration)"
    )


def _records(path: Path, fields: tuple[Field, ...], rejects: list[str]) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
                if not isinstance(doc, dict):
                    raise ValueError("not a JSON object")
                yield from_wire(doc, fields)
            except ValueError as exc:
                rejects.append(f"{path}:{number}: {exc}")


def run(args: argparse.Namespace) -> int:
    from driftline.store import StoreError, open_store
    from driftline.store.prices import write_model_prices
    from driftline.streams.pricing import PriceBook
    from driftline.streams.sink import EventSink, RecordKind

    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_UNUSABLE
    inputs: list[tuple[RecordKind, Path, tuple[Field, ...]]] = [
        ("events", Path(args.events), EVENT_FIELDS)
    ]
    if args.traces:
        inputs.append(("traces", Path(args.traces), TRACE_FIELDS))
    for _, path, _ in inputs:
        if not path.is_file():
            print(f"driftline load: {path}: no such file", file=sys.stderr)
            return EXIT_UNUSABLE

    try:
        store = open_store(args.store, settings.store)
    except StoreError as exc:
        print(f"driftline load: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    rejects: list[str] = []
    counts: dict[str, int] = {}
    try:
        before = _totals(store)
        sink = EventSink(store, batch_rows=settings.store.batch_rows)
        for kind, path, fields in inputs:
            counts[kind] = 0
            for record in _records(path, fields, rejects):
                sink.add(kind, record)
                counts[kind] += 1
                if sink.pending_rows >= sink.batch_rows:
                    sink.flush()
        sink.flush()
        for kind, rejected, why in sink.rejected:
            key = rejected.get("span_id") or rejected.get("trace_id")
            rejects.append(f"{kind} {key}: {why}")
        write_model_prices(store, PriceBook(settings.prices))
        after = _totals(store)
    except StoreError as exc:
        print(f"driftline load: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    finally:
        store.close()
    for line in rejects:
        print(line, file=sys.stderr)
    print(
        f"read {counts.get('events', 0)} events, {counts.get('traces', 0)} traces; "
        f"new in {store.url}: {after[0] - before[0]} requests, {after[1] - before[1]} traces"
    )
    return EXIT_SOME_REJECTED if rejects else EXIT_OK


def _totals(store: Any) -> tuple[int, int]:
    table = store.query(
        "SELECT (SELECT count() FROM driftline.llm_requests) AS requests,"
        " (SELECT count() FROM driftline.llm_traces) AS traces"
    )
    return int(table.column("requests")[0].as_py()), int(table.column("traces")[0].as_py())
