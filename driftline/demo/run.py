"""``driftline demo`` end to end: stack, traffic with incidents, live view, tables, report.

Order of work:

1. a fresh data directory with the demo's ``driftline.toml``;
2. paging: a local Events API v2 receiver (exported to the worker through
   ``PAGERDUTY_ROUTING_KEY`` / ``PAGERDUTY_EVENTS_URL``), unless a routing key is already
   set, in which case pages go to the real endpoint;
3. the embedded stack (tansu, rotel, worker with chdb);
4. the simulator in a thread, segment by segment along the scripted timeline, while the
   main thread reads ``llm_events`` and ``llm_alerts`` and refreshes the view;
5. drain: wait until every event sent was published and stored, then stop the stack (chdb
   allows one process per path, so the store is read after the worker is gone);
6. cost tables and alerts from SQL, dashboards JSON and the static report.

Ctrl-C (or SIGTERM) at any point stops the traffic, stops the stack and still prints what
was stored.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any, Final, TextIO
from urllib.parse import urlsplit

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from driftline.config import DEFAULT_PAGERDUTY_EVENTS_URL, Settings, load_settings
from driftline.demo.config import RATE_PER_S, write_demo_config
from driftline.demo.metrics import WorkerMetrics
from driftline.demo.receiver import Page, PagerDutyReceiver
from driftline.demo.timeline import ScriptedIncident, explain, scripted_timeline, segments
from driftline.demo.view import (
    Frame,
    LiveView,
    clock,
    format_table,
    incident_outcome,
    paging_outcome,
)
from driftline.demo.watch import AlertState, PipelineWatch
from driftline.simulator import (
    GroundTruth,
    SimulationResult,
    Simulator,
    SimulatorConfig,
    network_metric_exporter,
)
from driftline.simulator import network_exporter as otlp_exporter

MARKER_FILE: Final = ".driftline-demo"
ENV_ROUTING_KEY: Final = "PAGERDUTY_ROUTING_KEY"
ENV_EVENTS_URL: Final = "PAGERDUTY_EVENTS_URL"
LOCAL_ROUTING_KEY: Final = "driftline-demo-local-receiver"
REFRESH_S: Final = 1.0
RATE_WINDOW_S: Final = 3.0
DRAIN_TIMEOUT_S: Final = 60.0
MAX_ALERT_ROWS: Final = 40


class DemoError(RuntimeError):
    """The demo cannot run as asked; the message says what to change."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM arrived: stop the traffic and the stack, then report."""


# Set by the signal handler as well as raising: an exception raised by a handler lands in
# whatever code runs at that instant, and a library that catches broadly can swallow it (a
# Ctrl-C was seen ignored under load); the live loop checks this flag at every refresh.
_STOP_REQUESTED = threading.Event()


@dataclass(frozen=True)
class DemoOptions:
    data_dir: Path = Path("var/demo")
    duration_s: float = 120.0
    seed: int = 7
    rate: float = RATE_PER_S
    tty: bool | None = None  # None: ask the output stream


@dataclass
class Detection:
    incident: ScriptedIncident
    alerts: list[AlertState] = field(default_factory=list)
    first_after_s: float | None = None


@dataclass
class DemoOutcome:
    """What the run showed; the exit code is 0 unless a part failed."""

    exit_code: int = 0
    interrupted: bool = False
    wall_s: float = 0.0
    events_sent: int = 0
    events_seen: int = 0
    alerts: list[AlertState] = field(default_factory=list)
    detections: list[Detection] = field(default_factory=list)
    pages: list[Page] = field(default_factory=list)
    dashboards: list[Path] = field(default_factory=list)
    report: Path | None = None


# --- traffic ---------------------------------------------------------------------


class SpanCounter:
    """Spans accepted and refused by the collector, updated from exporter threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sent = 0
        self.failed = 0

    def add(self, count: int, ok: bool) -> None:
        with self._lock:
            if ok:
                self.sent += count
            else:
                self.failed += count


class CountingExporter(SpanExporter):
    """The OTLP exporter, counting what the collector accepted for the live view."""

    def __init__(self, inner: SpanExporter, counter: SpanCounter) -> None:
        self._inner = inner
        self._counter = counter

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self._inner.export(spans)
        self._counter.add(len(spans), result is SpanExportResult.SUCCESS)
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._inner.force_flush(timeout_millis)


class Traffic(threading.Thread):
    """Plays the timeline: one realtime simulator per segment, kept on the run's clock."""

    def __init__(
        self,
        endpoint: str,
        timeline: Sequence[ScriptedIncident],
        options: DemoOptions,
    ) -> None:
        super().__init__(name="demo-traffic", daemon=True)
        self.endpoint = endpoint
        self.segments = segments(timeline, options.duration_s)
        self.options = options
        self.spans = SpanCounter()
        self.truth = GroundTruth(keep=False, price=False)  # counts the events sent
        self.results: list[SimulationResult] = []
        self.error: BaseException | None = None
        self.started_at = time.time()
        self._t0 = time.monotonic()
        self._lock = threading.Lock()
        self._stopped = False
        self._current: Simulator | None = None

    def elapsed_s(self) -> float:
        return time.monotonic() - self._t0

    def run(self) -> None:
        self.started_at, self._t0 = time.time(), time.monotonic()
        try:
            for index, segment in enumerate(self.segments):
                remaining = segment.end_s - self.elapsed_s()
                if remaining <= 0.05:
                    continue
                simulator = Simulator(
                    SimulatorConfig(
                        rate=self.options.rate,
                        duration_s=remaining,
                        seed=self.options.seed * 1000 + index,
                        incidents=segment.incidents,
                        clock="realtime",
                    )
                )
                with self._lock:
                    if self._stopped:
                        return
                    self._current = simulator
                exporter = CountingExporter(otlp_exporter("grpc", self.endpoint), self.spans)
                # The vLLM servers report KV usage, queue and preemptions as engine metrics,
                # the way a real vLLM is scraped; the worker joins them to the calls.
                engines = network_metric_exporter("grpc", self.endpoint)
                self.results.append(simulator.run([exporter], self.truth, engines))
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            if self._current is not None:
                self._current.stop()


# --- paging ------------------------------------------------------------------------


@dataclass
class Paging:
    receiver: PagerDutyReceiver | None
    description: str

    def pages(self) -> list[Page]:
        return self.receiver.pages() if self.receiver is not None else []


@contextmanager
def paging() -> Iterator[Paging]:
    """The local receiver (and the worker's environment pointing at it), or real paging."""
    if os.environ.get(ENV_ROUTING_KEY):
        url = os.environ.get(ENV_EVENTS_URL) or DEFAULT_PAGERDUTY_EVENTS_URL
        yield Paging(None, f"REAL paging to {urlsplit(url).hostname} ({ENV_ROUTING_KEY} is set)")
        return
    saved = {k: os.environ.get(k) for k in (ENV_ROUTING_KEY, ENV_EVENTS_URL)}
    receiver = PagerDutyReceiver().start()
    os.environ[ENV_ROUTING_KEY] = LOCAL_ROUTING_KEY
    os.environ[ENV_EVENTS_URL] = receiver.events_url
    try:
        yield Paging(receiver, f"local PagerDuty stand-in at {receiver.events_url}")
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        receiver.stop()


# --- the run ---------------------------------------------------------------------------


def prepare_data_dir(path: Path) -> Path:
    """Empty ``path`` for a fresh run; refuse a non-empty directory the demo did not make."""
    path = path.resolve()
    if path.exists():
        if not path.is_dir():
            raise DemoError(f"--data-dir {path} is a file; give a directory")
        if any(path.iterdir()) and not (path / MARKER_FILE).exists():
            raise DemoError(
                f"--data-dir {path} is not empty and was not made by `driftline demo`; "
                "give a new or empty directory (the demo wipes it at every start)"
            )
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / MARKER_FILE).write_text("made by driftline demo; wiped at every start\n")
    return path


@contextmanager
def _stop_on_signals() -> Iterator[None]:
    def raise_interrupted(signum: int, frame: FrameType | None) -> None:
        _STOP_REQUESTED.set()
        raise Interrupted(signal.Signals(signum).name)

    _STOP_REQUESTED.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, raise_interrupted) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def _uninterruptible() -> Iterator[None]:
    """Teardown must finish: a second Ctrl-C or SIGTERM would leave processes behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def run_demo(options: DemoOptions, out: TextIO) -> DemoOutcome:
    from driftline.collectors.process import ProcessStartError
    from driftline.stack import EmbeddedStack

    began = time.monotonic()
    outcome = DemoOutcome()
    view = LiveView.for_stream(out, options.tty)
    data_dir = prepare_data_dir(options.data_dir)
    config_file = write_demo_config(data_dir)
    settings = load_settings(config_file)
    timeline = scripted_timeline(options.duration_s)
    view.note(
        f"driftline demo: {options.duration_s:.0f}s of simulated traffic at "
        f"{options.rate:.0f} requests/s over 4 workflows, {len(timeline)} scripted incidents"
    )
    view.note(f"data and logs in {data_dir} (config {config_file.name})")
    traffic: Traffic | None = None
    with _stop_on_signals(), paging() as pager:
        view.note(f"paging: {pager.description}")
        stack = EmbeddedStack(settings, config_file=config_file, echo=view.note)
        try:
            view.note("starting the embedded stack (broker, topics, collector, worker)...")
            endpoints = stack.start()
            view.note(f"stack up in {stack.times.total_s:.1f}s; traffic starts")
            watch = PipelineWatch(settings, endpoints.bootstrap_servers).start()
            worker = WorkerMetrics(endpoints.worker_metrics, window_s=RATE_WINDOW_S)
            try:
                traffic = Traffic(endpoints.otlp_grpc, timeline, options)
                traffic.start()
                _live(view, watch, worker, traffic, stack, pager, timeline, options, outcome)
            finally:
                worker.close()
                watch.close()
                _summarize_live(outcome, watch, traffic, timeline, pager)
        except (KeyboardInterrupt, Interrupted):
            outcome.interrupted = True
            view.note("interrupted: stopping the traffic and the stack, then reporting")
        except (ProcessStartError, DemoError) as exc:
            outcome.exit_code = 1
            view.note(f"driftline demo: {exc}")
        finally:
            with _uninterruptible():
                if traffic is not None:
                    traffic.stop()
                    traffic.join(timeout=30)
                view.note("stopping the stack...")
                stack.stop()
        outcome.pages = pager.pages()
    with _uninterruptible():
        _final_report(settings, data_dir, outcome, view, traffic)
    outcome.wall_s = time.monotonic() - began
    view.note(f"demo finished in {clock(outcome.wall_s)} (mm:ss) wall time")
    return outcome


def _live(
    view: LiveView,
    watch: PipelineWatch,
    worker: WorkerMetrics,
    traffic: Traffic,
    stack: Any,
    pager: Paging,
    timeline: Sequence[ScriptedIncident],
    options: DemoOptions,
    outcome: DemoOutcome,
) -> None:
    samples: list[tuple[float, int]] = []  # (monotonic, spans sent)
    detected: dict[str, float] = {}
    explained: dict[str, str] = {}
    phase = "traffic"
    drain_deadline: float | None = None
    settle_until: float | None = None
    while True:
        deadline = time.monotonic() + REFRESH_S
        while time.monotonic() < deadline:
            watch.poll(min(0.2, max(0.0, deadline - time.monotonic())))
        if _STOP_REQUESTED.is_set():
            raise Interrupted("stop requested")
        stack.check_alive()
        if traffic.error is not None:
            raise DemoError(f"the traffic simulator failed: {traffic.error}") from traffic.error
        now = time.monotonic()
        samples = [s for s in samples if now - s[0] <= RATE_WINDOW_S]
        samples.append((now, traffic.spans.sent))
        spans_rate = _rate(samples)
        elapsed = min(traffic.elapsed_s(), options.duration_s)
        opened, resolved = watch.drain_news()
        for alert in opened:
            since = watch.bundle_first_seen.get((alert.workflow, alert.bundle_id))
            incident = explain(
                alert.record,
                alert.seen_open_s - traffic.started_at,
                timeline,
                None if since is None else since - traffic.started_at,
            )
            if incident is not None:
                explained[alert.alert_id] = incident.kind
                detected.setdefault(
                    incident.title, alert.seen_open_s - traffic.started_at - incident.start_s
                )
        if phase == "traffic" and not traffic.is_alive():
            phase = "draining"
            drain_deadline = now + DRAIN_TIMEOUT_S
        if phase == "draining" and drain_deadline is not None:
            if watch.events >= traffic.truth.count and settle_until is None:
                # Published means the store agent has it in hand; give it time to flush.
                settle_until = now + 2 * watch.settings.store.batch_seconds + 2.0
            if (settle_until is not None and now >= settle_until) or now >= drain_deadline:
                phase = "done"
        frame = Frame(
            phase=phase,
            elapsed_s=elapsed,
            duration_s=options.duration_s,
            spans_sent=traffic.spans.sent,
            spans_per_s=spans_rate,
            events_sent=traffic.truth.count,
            events_seen=watch.events,
            worker=worker.read(now),
            workflows=dict(watch.workflows),
            incidents=[(i, _incident_state(i, elapsed), detected.get(i.title)) for i in timeline],
            alerts=list(watch.alerts.values()),
            explained_by=explained,
            pages=pager.pages(),
            paging=pager.description,
            run_started=traffic.started_at,
            failed_spans=traffic.spans.failed,
        )
        view.update(frame, opened, resolved)
        if phase == "done":
            view.clear()
            if watch.events < traffic.truth.count:
                view.note(
                    f"warning: {traffic.truth.count - watch.events} of {traffic.truth.count} "
                    f"events sent did not reach llm_events within {DRAIN_TIMEOUT_S:.0f}s"
                )
            return


def _rate(samples: Sequence[tuple[float, int]]) -> float:
    if len(samples) < 2:
        return 0.0
    (t0, s0), (t1, s1) = samples[0], samples[-1]
    return (s1 - s0) / max(t1 - t0, 1e-6)


def _incident_state(incident: ScriptedIncident, elapsed_s: float) -> str:
    if elapsed_s < incident.start_s:
        return "pending"
    if incident.end_s is not None and elapsed_s >= incident.end_s:
        return "ended"
    return "active"


def _summarize_live(
    outcome: DemoOutcome,
    watch: PipelineWatch,
    traffic: Traffic | None,
    timeline: Sequence[ScriptedIncident],
    pager: Paging,
) -> None:
    outcome.alerts = list(watch.alerts.values())
    outcome.events_seen = watch.events
    if traffic is None:
        return
    outcome.events_sent = traffic.truth.count
    detections = []
    for incident in timeline:
        detection = Detection(incident)
        for alert in outcome.alerts:
            since = watch.bundle_first_seen.get((alert.workflow, alert.bundle_id))
            seen = alert.seen_open_s - traffic.started_at
            bundle_since = None if since is None else since - traffic.started_at
            if explain(alert.record, seen, timeline, bundle_since) is incident:
                detection.alerts.append(alert)
        if detection.alerts:
            first = min(a.seen_open_s for a in detection.alerts)
            detection.first_after_s = first - traffic.started_at - incident.start_s
        detections.append(detection)
    outcome.detections = detections


# --- after the run: SQL, dashboards, report ---------------------------------------------


def _final_report(
    settings: Settings,
    data_dir: Path,
    outcome: DemoOutcome,
    view: LiveView,
    traffic: Traffic | None,
) -> None:
    from driftline.dashboards.build import write_all
    from driftline.dashboards.macros import TimeRange
    from driftline.dashboards.panels import BuildContext
    from driftline.dashboards.report import default_variables, render_report
    from driftline.store import StoreError, open_store
    from driftline.store.prices import write_model_prices
    from driftline.store.queries import run_query
    from driftline.streams.pricing import PriceBook

    view.note("")
    _print_detections(outcome, view, traffic)
    context = BuildContext.from_settings(settings)
    outcome.dashboards = write_all(data_dir / "dashboards", context)
    try:
        store = open_store(settings.store.url, settings.store)
    except StoreError as exc:
        view.note(f"the store could not be opened ({exc}); nothing to report from SQL")
        view.note(f"dashboards JSON: {data_dir / 'dashboards'} ({len(outcome.dashboards)} files)")
        outcome.exit_code = outcome.exit_code or 1
        return
    try:
        span = store.query(
            "SELECT count() AS n, sum(cost_usd) AS cost, min(start_ts) AS first, "
            "max(end_ts) AS last FROM driftline.llm_requests"
        ).to_pylist()[0]
        if not span["n"]:
            view.note("no events were stored; no tables or report")
            return
        start = _utc(span["first"]) - timedelta(minutes=1)
        end = _utc(span["last"]) + timedelta(minutes=1)
        params = {"from": start, "to": end}
        by_workflow = run_query(store, "cost_by_workflow", **params).to_pylist()
        by_model = run_query(store, "cost_by_model", **params).to_pylist()
        columns = ["requests", "input_tokens", "output_tokens", "spend_usd", "spend_share"]
        if traffic is not None:
            began = datetime.fromtimestamp(traffic.started_at, UTC)
            view.note(
                f"traffic started {began:%H:%M:%S} UTC; long traces began before it (event "
                "times are span times)"
            )
        view.note(
            f"cost attribution (schemas/queries/cost_by_workflow.sql, "
            f"{start:%H:%M:%S} to {end:%H:%M:%S} UTC)"
        )
        for line in format_table(by_workflow, ["workflow", *columns]):
            view.note("  " + line)
        total_requests = sum(r["requests"] for r in by_workflow)
        total_cost = sum(r["spend_usd"] or 0.0 for r in by_workflow)
        view.note(
            f"  total: {total_requests:,} requests, {total_cost:.4f} USD; the store holds "
            f"{span['n']:,} requests, {span['cost'] or 0.0:.4f} USD"
            + (f" ({outcome.events_sent:,} events were sent)" if outcome.events_sent else "")
        )
        view.note("")
        view.note("cost by model (schemas/queries/cost_by_model.sql)")
        for line in format_table(by_model, ["model", *columns]):
            view.note("  " + line)
        view.note("")
        _print_alerts(store, view)
        _print_deliveries(store, view, outcome)
        # The worker writes no model rates; the cache-savings panel needs them.
        write_model_prices(store, PriceBook(settings.prices))
        report = render_report(
            store,
            data_dir / "report",
            TimeRange.between(start, end),
            context,
            default_variables(),
        )
        outcome.report = report.index
        charted = [p for p in report.charts if p.points]
        view.note("")
        view.note(f"dashboards JSON: {data_dir / 'dashboards'} ({len(outcome.dashboards)} files)")
        view.note(
            f"static report:   {report.index} ({len(charted)} of {len(report.charts)} charts "
            "with data)"
        )
        for panel in report.empty:
            view.note(f"  no data in {panel.title!r}: {panel.empty_reason}")
        view.note(
            f"query the store: driftline --config {data_dir / 'driftline.toml'} sql "
            '"SELECT workflow, sum(cost_usd) FROM driftline.llm_requests GROUP BY workflow"'
        )
    except StoreError as exc:
        view.note(f"a query failed: {exc}")
        outcome.exit_code = outcome.exit_code or 1
    finally:
        store.close()


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _print_detections(outcome: DemoOutcome, view: LiveView, traffic: Traffic | None) -> None:
    if not outcome.detections:
        return
    view.note("incidents and the alerts that caught them")
    for d in outcome.detections:
        i = d.incident
        when = clock(i.start_s) + (f"-{clock(i.end_s)}" if i.end_s is not None else "")
        if d.first_after_s is None:
            verdict = "NOT DETECTED" if i.expects_alert else "a change, no alert on it"
            view.note(f"  {when:11} {i.kind:17} {verdict}  ({i.title})")
            continue
        kinds = sorted({f"{a.kind}:{a.metric}" for a in d.alerts})
        became = incident_outcome(i.end_s is None, d.alerts)
        view.note(
            f"  {when:11} {i.kind:17} detected after {d.first_after_s:4.0f}s by "
            f"{len(d.alerts)} alert(s), {became}: {', '.join(kinds)}"
        )
    other = len(outcome.alerts) - len({a.alert_id for d in outcome.detections for a in d.alerts})
    if other:
        view.note(f"  {other} other alert(s) not tied to a scripted incident")
    view.note(f"  paging: {paging_outcome(outcome.pages)}")
    view.note("")


def _print_alerts(store: Any, view: LiveView) -> None:
    rows = store.query(
        "SELECT opened_at, resolved_at, kind, severity, workflow, metric, state"
        " FROM driftline.llm_alerts_current ORDER BY opened_at, workflow, metric"
    ).to_pylist()
    view.note(f"alerts (driftline.llm_alerts_current): {len(rows)}")
    cols = ["opened_at", "resolved_at", "kind", "severity", "workflow", "metric", "state"]
    for line in format_table(rows[:MAX_ALERT_ROWS], cols):
        view.note("  " + line)
    if len(rows) > MAX_ALERT_ROWS:
        view.note(f"  ... and {len(rows) - MAX_ALERT_ROWS} more")


def _print_deliveries(store: Any, view: LiveView, outcome: DemoOutcome) -> None:
    rows = store.query(
        "SELECT event_action, outcome, count() AS n FROM driftline.alert_deliveries"
        " GROUP BY event_action, outcome ORDER BY event_action, outcome"
    ).to_pylist()
    text = ", ".join(f"{r['n']} {r['event_action']} {r['outcome']}" for r in rows) or "none"
    received = ""
    if outcome.pages:
        triggers = sum(1 for p in outcome.pages if p.action == "trigger")
        resolves = sum(1 for p in outcome.pages if p.action == "resolve")
        received = f"; the receiver accepted {triggers} triggers and {resolves} resolves"
    view.note(f"paging (driftline.alert_deliveries): {text}{received}")
