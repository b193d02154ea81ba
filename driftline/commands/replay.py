"""``driftline replay EVENTS.ndjson``: run the stream's monitor offline over recorded events.

Reads normalized events as ``driftline normalize`` prints them (one JSON object per
line, :func:`schemas.event.to_wire` form; unknown fields ignored), optionally trace
summaries, and runs exactly :class:`streams.monitor.Monitor` over them in event-time
order. Prints one NDJSON alert record per lifecycle transition (open, resolve; updates
with ``--updates``), in event-time order. The same input always gives the same bytes.
An alert still open when the recording ends stays open: no resolve is invented.
Events go through the monitor in event-time batches of ``BATCH_EVENTS``; the stream
batches differently, which can move a canary comparison by a few events.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from driftline.config import ConfigError, Settings, load_settings
from schemas.alert import TRANSITION_FIELDS
from schemas.event import EVENT_FIELDS, TRACE_FIELDS, Field, from_wire, to_wire
from streams.monitor import Monitor, event_time

BATCH_EVENTS = 2048


class ReplayInputError(ValueError):
    """A line of the input is not a JSON object; the message names file and line."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("events", metavar="EVENTS.ndjson", help="normalized events, '-' for stdin")
    parser.add_argument("--traces", metavar="TRACES.ndjson", help="trace summaries (NDJSON)")
    parser.add_argument(
        "--config",
        dest="replay_config",
        metavar="FILE",
        help="driftline.toml (same as the global --config)",
    )
    parser.add_argument(
        "--updates", action="store_true", help="also print 'update' transitions of open alerts"
    )


def read_ndjson(path: str, fields: tuple[Field, ...], stdin: TextIO | None = None) -> list[dict]:
    """Records of an NDJSON file in internal form (timestamps as int microseconds)."""
    if path == "-":
        return [from_wire(doc, fields) for doc in _documents(stdin or sys.stdin, "<stdin>")]
    with Path(path).open(encoding="utf-8") as stream:
        return [from_wire(doc, fields) for doc in _documents(stream, path)]


def _documents(lines: TextIO, name: str) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ReplayInputError(f"{name}:{number}: not JSON ({exc.msg})") from None
        if not isinstance(doc, dict):
            raise ReplayInputError(f"{name}:{number}: expected a JSON object per line")
        yield doc


def replay(
    settings: Settings,
    events: list[dict],
    traces: list[dict] | None = None,
    include_updates: bool = False,
) -> list[dict]:
    """Alert transitions of ``events`` (and ``traces``) through a fresh monitor.

    The seam for notification: callers get the transition records and decide where
    they go. Input order does not matter; records are processed in event-time order.
    """
    monitor = Monitor(settings)
    ordered = sorted(events, key=lambda e: (event_time(e), e["trace_id"], e["span_id"]))
    pending = sorted(traces or [], key=lambda t: (event_time(t), t["trace_id"]))
    out: list[dict] = []
    t = 0
    for start in range(0, len(ordered), BATCH_EVENTS):
        batch = ordered[start : start + BATCH_EVENTS]
        horizon = event_time(batch[-1])
        stop = t
        while stop < len(pending) and event_time(pending[stop]) <= horizon:
            stop += 1
        out.extend(monitor.process(batch, pending[t:stop]))
        t = stop
    if t < len(pending):
        out.extend(monitor.process([], pending[t:]))
    if not include_updates:
        out = [r for r in out if r["transition"] != "update"]
    return out


def to_json_line(record: dict) -> str:
    return json.dumps(to_wire(record, TRANSITION_FIELDS), sort_keys=False, separators=(",", ":"))


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.replay_config or args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        events = read_ndjson(args.events, EVENT_FIELDS)
        traces = read_ndjson(args.traces, TRACE_FIELDS) if args.traces else []
    except (OSError, ReplayInputError) as exc:
        print(f"driftline replay: {exc}", file=sys.stderr)
        return 2
    for record in replay(settings, events, traces, include_updates=args.updates):
        sys.stdout.write(to_json_line(record) + "\n")
    return 0
