"""``driftline load EVENTS.ndjson [--traces FILE]``: load normalized events into the store.

EVENTS is NDJSON as ``driftline normalize`` prints it (``--traces`` as it writes trace
summaries). Rows go through the same sink as the stream worker, so loading a file twice
leaves every total unchanged. Rates of the models seen are written for the cache-savings query.
Exit status: 0 all loaded, 1 some lines rejected (listed on stderr), 2 unusable input or store.
"""

from __future__ import annotations

import argparse
import codecs
import fnmatch
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from driftline.commands.records import AttributeBounds, checked_record, loads_strict
from driftline.commands.terminal import print_config_error
from driftline.config import ConfigError, Settings, load_settings
from driftline.schemas.attributes import DEFAULT_ATTRIBUTES_ALLOW
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


def _records(
    path: Path, fields: tuple[Field, ...], rejects: list[str], bounds: AttributeBounds
) -> Iterator[dict[str, Any]]:
    """The usable records of ``path``: held to the bounds the normalizer holds spans to (a
    file is outside input like any span), their attributes to the ingest allow list."""
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            try:
                # A byte-order mark, as some editors save text, is no part of the record.
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                # The start of the file was checked (_not_text); a bad line later is one reject.
                rejects.append(f"{path}:{number}: not UTF-8 text (byte {exc.start} of the line)")
                continue
            if not line.strip():
                continue
            try:
                doc = loads_strict(line)
                if not isinstance(doc, dict):
                    raise ValueError("not a JSON object")
                record = from_wire(doc, fields)
            except ValueError as exc:
                rejects.append(f"{path}:{number}: {exc}")
                continue
            problem = checked_record(record, fields, bounds)
            if problem is not None:
                rejects.append(f"{path}:{number}: {problem}")
                continue
            yield record


def _not_text(path: Path) -> str | None:
    """Why ``path`` is not NDJSON text (checked on its start, before a store is opened)."""
    with path.open("rb") as raw:
        head = raw.read(1 << 16)
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError as exc:
        return f"not UTF-8 text (byte {exc.start}); OTLP protobuf goes to `driftline normalize`"
    return None


def _attribute_filter(settings: Settings) -> Callable[[str], bool]:
    """The keys an event's attributes may keep, as the normalizer decides (``[ingest]``)."""
    if settings.ingest.store_content:
        return lambda key: True
    patterns = settings.ingest.attributes_allow
    allowed = DEFAULT_ATTRIBUTES_ALLOW if patterns is None else tuple(patterns)
    return lambda key: any(fnmatch.fnmatchcase(key, p) for p in allowed)


def run(args: argparse.Namespace) -> int:
    from driftline.store import StoreError, open_store
    from driftline.store.prices import write_model_prices
    from driftline.streams.pricing import PriceBook
    from driftline.streams.sink import EventSink, RecordKind

    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print_config_error(exc)
        return EXIT_UNUSABLE
    inputs: list[tuple[RecordKind, Path, tuple[Field, ...]]] = [
        ("events", Path(args.events), EVENT_FIELDS)
    ]
    if args.traces:
        inputs.append(("traces", Path(args.traces), TRACE_FIELDS))
    for _, path, _ in inputs:
        if not path.is_file():
            missing = "a directory, not a file" if path.is_dir() else "no such file"
            print(f"driftline load: {path}: {missing}", file=sys.stderr)
            return EXIT_UNUSABLE
        if why := _not_text(path):
            print(f"driftline load: {path}: {why}", file=sys.stderr)
            return EXIT_UNUSABLE
    bounds = AttributeBounds(
        _attribute_filter(settings),
        settings.streams.max_span_attributes,
        settings.streams.max_attribute_chars,
    )

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
            for record in _records(path, fields, rejects, bounds):
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
