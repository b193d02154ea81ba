"""``driftline normalize FILE``: decode recorded OTLP traces and print normalized events.

FILE holds one OTLP protobuf message (``TracesData`` or ``ExportTraceServiceRequest``)
or OTLP/JSON: one document, or NDJSON with one document per line as the
OpenTelemetry collector's file exporter writes it. Events go to stdout as NDJSON
(one per LLM-call span, in start order, timestamps ISO 8601 UTC); each rejected
span or document is one JSON line on stderr, and the last stderr line counts what was
read: the file's encoding, documents (and how many were rejected whole), spans, and what
became of them: events printed, spans rejected, duplicates (a span id an earlier span of the
file had: counted once) and spans skipped (not LLM calls), which add up to the spans. Exit
status: 0 when every span was read (an empty file has none), 1 when some spans or documents
were rejected (the rest is printed), 2 when the file is missing, not OTLP at all, or the
configuration is invalid.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from driftline.commands.exits import EXIT_FAILED, EXIT_OK
from driftline.commands.terminal import print_config_error
from driftline.config import ConfigError, load_settings
from driftline.schemas.event import EVENT_FIELDS, TRACE_FIELDS, to_wire

EXIT_UNUSABLE_INPUT = 2
EXIT_SOME_REJECTED = EXIT_FAILED


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file", metavar="FILE", help="OTLP protobuf, OTLP/JSON or NDJSON of OTLP/JSON"
    )
    parser.add_argument(
        "--traces",
        metavar="FILE",
        help="also write one trace summary per trace to FILE as NDJSON",
    )


def run(args: argparse.Namespace) -> int:
    from driftline.streams.pipeline import OfflinePipeline, split_otlp_file

    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print_config_error(exc)
        return EXIT_UNUSABLE_INPUT
    path = Path(args.file)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        print(f"driftline normalize: {path}: no such file", file=sys.stderr)
        return EXIT_UNUSABLE_INPUT
    except OSError as exc:
        print(f"driftline normalize: {path}: cannot read: {exc.strerror}", file=sys.stderr)
        return EXIT_UNUSABLE_INPUT

    if args.traces and (problem := _unwritable(Path(args.traces), path)):
        # Said before any work: found after it, the events decoded were never printed.
        print(f"driftline normalize: cannot write {args.traces}: {problem}", file=sys.stderr)
        return EXIT_UNUSABLE_INPUT

    if not data.strip():
        # Zero bytes decode as an empty TracesData: say what was read, not "1 documents".
        print(f"driftline normalize: {path}: empty file: 0 documents, 0 spans", file=sys.stderr)
        return EXIT_OK
    pipeline = OfflinePipeline.from_settings(settings)
    documents = split_otlp_file(data)
    for payload, content_type in documents:
        pipeline.feed(payload, content_type)
    result = pipeline.finish()
    encoding = "OTLP protobuf" if documents[0][1] == "otlp_proto" else "OTLP/JSON"

    if result.documents and not result.otlp_documents:
        first = result.rejects[0].reject if result.rejects else None
        why = f" ({first.reason}: {first.detail})" if first is not None else ""
        print(
            f"driftline normalize: {path} is not OTLP traces{why}; expected an OTLP protobuf "
            "TracesData/ExportTraceServiceRequest, OTLP/JSON, or NDJSON of OTLP/JSON documents",
            file=sys.stderr,
        )
        return EXIT_UNUSABLE_INPUT

    for sourced in result.rejects:
        reject = sourced.reject
        line = {
            "reason": reject.reason,
            "detail": reject.detail,
            "trace_id": reject.trace_id,
            "span_id": reject.span_id,
            "document": sourced.document,
        }
        print(json.dumps(line), file=sys.stderr)
    rejected_documents = result.rejected_documents
    read = f"{result.documents} documents" + (
        f" ({rejected_documents} rejected)" if rejected_documents else ""
    )
    print(
        f"driftline normalize: {path} ({encoding}): {read}, {result.span_count} spans: "
        f"{len(result.events)} events, {result.rejected_spans} rejected, "
        f"{result.duplicate_spans} duplicates, {result.skipped_spans} skipped (not LLM calls); "
        f"{len(result.traces)} traces",
        file=sys.stderr,
    )

    if args.traces:
        try:
            with open(args.traces, "w", encoding="utf-8") as out:
                _write_ndjson(out, (to_wire(t, TRACE_FIELDS) for t in result.traces))
        except OSError as exc:
            print(
                f"driftline normalize: cannot write {args.traces}: {exc.strerror}", file=sys.stderr
            )
            return EXIT_UNUSABLE_INPUT
    try:
        _write_ndjson(sys.stdout, (to_wire(e, EVENT_FIELDS) for e in result.events))
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader (``| head``) has gone; that is not an error. Point stdout at
        # /dev/null so the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return EXIT_SOME_REJECTED if result.rejects else EXIT_OK


def _unwritable(path: Path, recording: Path) -> str | None:
    """Why ``path`` cannot take the traces, or None (it is not created here)."""
    if path.is_dir():
        return "is a directory"
    if path.is_file() and recording.is_file() and path.samefile(recording):
        return "it is the recording being read (it would be overwritten)"
    if path.exists():  # a file, or a device such as /dev/null or /dev/stdout
        return None if os.access(path, os.W_OK) else "permission denied"
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        return "no such directory"
    return None if os.access(parent, os.W_OK) else "permission denied"


def _write_ndjson(out: IO[str], records: Iterable[dict[str, Any]]) -> None:
    for record in records:
        out.write(json.dumps(record, separators=(",", ":")))
        out.write("\n")
