"""``driftline replay EVENTS.ndjson``: run the stream's monitor offline over recorded events.

Reads normalized events as ``driftline normalize`` prints them (one JSON object per
line, :func:`schemas.event.to_wire` form; unknown fields ignored), optionally trace
summaries, and runs exactly :class:`streams.monitor.Monitor` over them in event-time
order. Prints one NDJSON alert record per lifecycle transition (open, resolve; updates
with ``--updates``), in event-time order. The same input always gives the same bytes.
An alert still open when the recording ends stays open: no resolve is invented.
Events go through the monitor in event-time batches of ``BATCH_EVENTS``; the stream
batches differently, which can move a canary comparison or an alert's transition by a
few events (the detectors' decisions do not depend on the batches).

With ``--notify`` the printed transitions are then sent through the stream's notifier
and routing (``[pagerduty]`` config; with no routes, ``$PAGERDUTY_ROUTING_KEY`` to
``$PAGERDUTY_EVENTS_URL``), paced by the rate limit but never by event time. stdout
stays the NDJSON alerts; a summary of delivery outcomes goes to stderr (targets as
route@host, never a routing key). Exit 1 when a delivery failed for good (rejected or
gave up), 2 when a route's secret is not set (nothing is sent then).

With ``--store URL`` (``chdb:///path`` or ``clickhouse://...``; created with the schema when
new) the replay is also written where analysts and dashboards read the stream's results:
every transition (updates included) to ``llm_alerts``, the final baseline of each detector
to ``workflow_baselines`` and, with ``--notify``, every delivery attempt to
``alert_deliveries``. Writing the same replay twice changes nothing (alert ids and insert
tokens are deterministic). A write command may migrate the store; its TTL changes only when
the configuration sets ``store.ttl_days`` explicitly.

Input is checked before anything runs: a binary file (OTLP protobuf) or OTLP/JSON is refused
with the command that turns it into events (``driftline normalize``); a line that is not a
JSON object, lacks a required field or has a bad timestamp is rejected and named on stderr.
stderr always ends with the counts: lines read, events and traces used, rejected, skipped.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Any, Final, TextIO

from driftline.commands.records import checked_record, loads_strict
from driftline.commands.terminal import print_config_error
from driftline.config import ConfigError, Settings, load_settings
from driftline.schemas.alert import TRANSITION_FIELDS
from driftline.schemas.event import EVENT_FIELDS, TRACE_FIELDS, Field, from_wire, to_wire
from driftline.streams.monitor import Monitor, event_time
from driftline.streams.notifier import replay as notify

BATCH_EVENTS = 2048
EXIT_DELIVERY_FAILED: Final = 1  # also: some input lines were rejected
EXIT_USAGE: Final = 2
# Without these a record cannot be ordered, keyed or attributed; every other field has a
# default (from_wire), so a record missing one of these is rejected instead of replayed as
# an event dated 1970 with no trace.
REQUIRED_EVENT_KEYS: Final = ("trace_id", "span_id", "start_ts", "end_ts", "workflow")
REQUIRED_TRACE_KEYS: Final = ("trace_id", "start_ts", "end_ts")
_SHOWN_REJECTS: Final = 20  # per file; the count covers the rest
# C0 controls other than tab, newline and carriage return: JSON text never holds them raw,
# protobuf field tags (0x12, 0x1a, ...) almost always do, even when every byte is ASCII.
_CONTROL: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_OTLP_JSON: Final = re.compile(r'"resource_?[sS]pans"\s*:')


class ReplayInputError(ValueError):
    """The input is not normalized events at all; the message names the file and what it is."""


@dataclass
class InputReport:
    """What reading one NDJSON file kept and dropped, for the summary on stderr."""

    name: str
    lines: int = 0
    used: int = 0
    skipped: int = 0  # blank lines
    rejects: list[str] = dc_field(default_factory=list)

    def summary(self, kind: str) -> str:
        return (
            f"{self.name}: read {self.lines} lines: {self.used} {kind} used, "
            f"{len(self.rejects)} rejected, {self.skipped} skipped (blank)"
        )


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
    parser.add_argument(
        "--store",
        metavar="URL",
        help="also write the alerts, final baselines and deliveries to this store "
        "(chdb:///path or clickhouse://user@host:8123/driftline)",
    )
    parser.add_argument(
        "--notify",
        action="store_true",
        help="also send the alerts through the configured PagerDuty/webhook routing "
        "(no routes configured: $PAGERDUTY_ROUTING_KEY to $PAGERDUTY_EVENTS_URL)",
    )


def read_ndjson(
    path: str,
    fields: tuple[Field, ...],
    stdin: TextIO | None = None,
    report: InputReport | None = None,
) -> list[dict]:
    """Records of an NDJSON file in internal form (timestamps as int microseconds).

    Raises :class:`ReplayInputError` for a file that is not normalized records at all;
    bad lines go to ``report.rejects`` (file:line: why) and are left out.
    """
    report = report if report is not None else InputReport(path)
    if path == "-":
        text = (stdin or sys.stdin).read()
        report.name = "<stdin>"
    else:
        text = _decode(Path(path).read_bytes(), path)
    text = text.removeprefix("\ufeff")  # a byte-order mark, as some editors save text
    if _OTLP_JSON.search(text[:65536]):
        raise ReplayInputError(
            f"{report.name} is OTLP/JSON (it has resourceSpans), not normalized events; run "
            f"`driftline normalize {report.name} > events.ndjson` and replay that"
        )
    required = REQUIRED_EVENT_KEYS if fields is EVENT_FIELDS else REQUIRED_TRACE_KEYS
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        report.lines += 1
        if not line.strip():
            report.skipped += 1
            continue
        where = f"{report.name}:{number}"
        try:
            doc = loads_strict(line)
        except json.JSONDecodeError as exc:
            report.rejects.append(f"{where}: not JSON ({exc.msg})")
            continue
        except ValueError as exc:  # NaN or Infinity: Python reads them, JSON has none
            report.rejects.append(f"{where}: {exc}")
            continue
        if not isinstance(doc, dict):
            report.rejects.append(f"{where}: expected a JSON object per line")
            continue
        missing = [key for key in required if doc.get(key) in (None, "")]
        if missing:
            report.rejects.append(f"{where}: missing {', '.join(missing)}")
            continue
        try:
            record = from_wire(doc, fields)
        except (ValueError, TypeError) as exc:
            report.rejects.append(f"{where}: {exc}")
            continue
        # Bounded as spans are (a non-finite TTFT froze a baseline and stopped the replay).
        problem = checked_record(record, fields)
        if problem is not None:
            report.rejects.append(f"{where}: {problem}")
            continue
        records.append(record)
        report.used += 1
    return records


def _decode(data: bytes, name: str) -> str:
    """The text of an NDJSON file, or an error saying what the file is instead."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or _CONTROL.search(text[:65536]):
        raise ReplayInputError(
            f"{name} is binary ({len(data)} bytes), not NDJSON: an OTLP protobuf file? replay "
            f"reads normalized events; run `driftline normalize {name} > events.ndjson` first"
        )
    return text


def replay(
    settings: Settings,
    events: list[dict],
    traces: list[dict] | None = None,
    include_updates: bool = False,
    monitor: Monitor | None = None,
) -> list[dict]:
    """Alert transitions of ``events`` (and ``traces``) through a fresh monitor.

    The seam for notification: callers get the transition records and decide where
    they go. Input order does not matter; records are processed in event-time order.
    Pass ``monitor`` to read its baselines afterwards.
    """
    monitor = monitor or Monitor(settings)
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


def notify_alerts(
    records: list[dict],
    settings: Settings,
    *,
    stderr: TextIO | None = None,
    environ: dict[str, str] | None = None,
    deliveries_out: list[dict] | None = None,
    **notifier_options: Any,
) -> int:
    """Send replayed transitions through the notifier; report on ``stderr``; exit code.

    ``notifier_options`` reach :class:`streams.notifier.Notifier` (tests inject
    ``clock`` and ``sleep`` there to check pacing without waiting); the delivery records
    are appended to ``deliveries_out`` when given.
    """
    err = stderr or sys.stderr
    problems = notify.missing_secrets(records, settings.pagerduty, environ=environ)
    if problems:
        for problem in problems:
            print(f"driftline replay --notify: {problem}", file=err)
        print("driftline replay --notify: nothing sent", file=err)
        return EXIT_USAGE
    deliveries = notify.notify_sync(
        records, settings.pagerduty, environ=environ, **notifier_options
    )
    if deliveries_out is not None:
        deliveries_out.extend(deliveries)
    for failed in notify.failures(deliveries):
        print(
            f"driftline replay --notify: {failed['event_action']} {failed['dedup_key']} "
            f"to {failed['target']}: {failed['outcome']}: {failed['error']}",
            file=err,
        )
    print(f"driftline replay --notify: {notify.summary(deliveries, len(records))}", file=err)
    return EXIT_DELIVERY_FAILED if notify.failures(deliveries) else 0


def write_to_store(
    url: str, settings: Settings, records: list[dict], monitor: Monitor, deliveries: list[dict]
) -> None:
    """The replay's transitions, final baselines and deliveries, as the worker writes them."""
    from driftline.schemas.tables import BASELINES, DELIVERIES
    from driftline.store import open_store
    from driftline.streams.baselines import baseline_rows
    from driftline.streams.sink import EventSink, to_arrow

    store = open_store(url, settings.store)
    try:
        sink = EventSink(store, batch_rows=max(len(records), 1))
        for record in records:
            sink.add("alerts", record)
        if records:
            sink.flush()
        baselines = baseline_rows(monitor, monitor.workflows(), monitor.watermark)
        if baselines:
            store.insert_arrow(BASELINES.name, to_arrow(baselines, BASELINES.fields), None)
        if deliveries:
            store.insert_arrow(DELIVERIES.name, to_arrow(deliveries, DELIVERIES.fields), None)
    finally:
        store.close()


def run(args: argparse.Namespace) -> int:
    from driftline.store import StoreError

    try:
        settings = load_settings(args.replay_config or args.config)
    except ConfigError as exc:
        print_config_error(exc)
        return EXIT_USAGE
    from driftline.commands.preflight import metric_problems

    if problems := metric_problems(settings):
        for problem in problems:
            print(f"driftline replay: {problem}", file=sys.stderr)
        return EXIT_USAGE
    reports = [InputReport(args.events)]
    try:
        events = read_ndjson(args.events, EVENT_FIELDS, report=reports[0])
        traces: list[dict] = []
        if args.traces:
            reports.append(InputReport(args.traces))
            traces = read_ndjson(args.traces, TRACE_FIELDS, report=reports[1])
    except FileNotFoundError as exc:
        print(f"driftline replay: {exc.filename}: no such file", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, ReplayInputError) as exc:
        print(f"driftline replay: {exc}", file=sys.stderr)
        return EXIT_USAGE
    rejected = _print_input_report(reports)
    if not events and rejected:
        print(f"driftline replay: no usable events in {reports[0].name}", file=sys.stderr)
        return EXIT_USAGE
    monitor = Monitor(settings)
    every = replay(settings, events, traces, include_updates=True, monitor=monitor)
    records = every if args.updates else [r for r in every if r["transition"] != "update"]
    for record in records:
        sys.stdout.write(to_json_line(record) + "\n")
    code = 0
    deliveries: list[dict] = []
    if getattr(args, "notify", False):
        sys.stdout.flush()  # alerts are out before the (paced) deliveries start
        code = notify_alerts(records, settings, deliveries_out=deliveries)
    if getattr(args, "store", None):
        try:
            write_to_store(args.store, settings, every, monitor, deliveries)
        except StoreError as exc:
            print(f"driftline replay: {exc}", file=sys.stderr)
            return EXIT_USAGE
        print(
            f"driftline replay: wrote {len(every)} alert transitions, the final baselines and "
            f"{len(deliveries)} deliveries to the store",
            file=sys.stderr,
        )
    print(
        f"driftline replay: {len(events)} events, {len(traces)} traces -> "
        f"{len(records)} alert transitions printed",
        file=sys.stderr,
    )
    return code or (EXIT_DELIVERY_FAILED if rejected else 0)


def _print_input_report(reports: list[InputReport]) -> int:
    """Rejected lines (the first few per file) and the counts; returns how many were rejected."""
    for report in reports:
        for line in report.rejects[:_SHOWN_REJECTS]:
            print(f"driftline replay: rejected {line}", file=sys.stderr)
        if len(report.rejects) > _SHOWN_REJECTS:
            more = len(report.rejects) - _SHOWN_REJECTS
            print(f"driftline replay: ... and {more} more rejected lines", file=sys.stderr)
    kinds = ("events", "traces")
    for report, kind in zip(reports, kinds, strict=False):
        print(f"driftline replay: {report.summary(kind)}", file=sys.stderr)
    return sum(len(r.rejects) for r in reports)
