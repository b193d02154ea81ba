"""The demo's live view reads the worker's own ``/metrics``: a local HTTP server serves what
the exporter renders (``streams.telemetry``), and the view's pipeline line shows its rates,
lag, open traces and store backlog, or why there is nothing to show."""

from __future__ import annotations

import io
import re
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar

from driftline.demo import metrics
from driftline.demo.metrics import PipelineLine, WorkerMetrics, WorkerReading
from driftline.demo.view import Frame, LiveView
from driftline.streams.telemetry import CONTENT_TYPE, Family, counter_families, render
from tests.utils.local_server import LocalServer

ROOT = Path(__file__).resolve().parents[2]


class Worker(BaseHTTPRequestHandler):
    """Answers /metrics with the exporter's rendering of ``counters`` and a few gauges."""

    counters: ClassVar[dict[str, float]] = {}
    status: ClassVar[int] = 200

    def do_GET(self) -> None:
        families = counter_families(self.counters)
        lag = Family("driftline_kafka_consumer_lag_records", "gauge", "lag")
        lag.add(30, topic="otlp_spans", partition="0").add(12, topic="llm_events", partition="1")
        families += [
            lag,
            Family("driftline_open_traces", "gauge", "open").add(7),
            Family("driftline_store_pending_rows", "gauge", "pending").add(250),
            Family("driftline_worker_ready", "gauge", "ready").add(1),
            Family("driftline_pipeline_alert_open", "gauge", "open")
            .add(0, condition="consumer_lag")
            .add(1, condition="store_failing"),
        ]
        body = render(families).encode()
        self.send_response(self.status if self.path == "/metrics" else 404)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_rates_lag_and_backlog_come_from_the_workers_metrics() -> None:
    Worker.status = 200
    with LocalServer(Worker) as server:
        reader = WorkerMetrics(server.url, window_s=10.0)
        try:
            Worker.counters = {"spans.in": 100, "events.decoded": 40, "rejects.not_otlp": 1}
            first = reader.read(now_s=50.0)
            Worker.counters = {"spans.in": 340, "events.decoded": 120, "rejects.not_otlp": 3}
            second = reader.read(now_s=52.0)
        finally:
            reader.close()
    assert first.reading is not None and (first.spans_per_s, first.calls_per_s) == (0.0, 0.0)
    assert (second.spans_per_s, second.calls_per_s) == (120.0, 40.0)
    assert second.reading == WorkerReading(
        at_s=52.0,
        spans_received=340,
        spans_rejected=3,
        calls_decoded=120,
        lag_records=42,
        open_traces=7,
        store_pending_rows=250,
        ready=True,
        pipeline_alerts_open=1,
    )
    assert second.text() == (
        "worker (/metrics)  spans in 120/s  calls 40/s  rejected 3  lag 42 records  "
        "open traces 7  store backlog 250 rows  ALERTS ABOUT ITSELF 1"
    )


def test_a_worker_without_metrics_is_shown_as_such() -> None:
    with LocalServer(Worker) as server:
        url = server.url
        Worker.status = 503
        reader = WorkerMetrics(url)
        assert reader.read().problem == "/metrics answered HTTP 503"
        reader.close()
        Worker.status = 200
    gone = WorkerMetrics(url)  # nothing listens any more: the server has stopped
    line = gone.read()
    gone.close()
    assert line.reading is None and line.problem.startswith("not answering (")
    assert line.text().startswith("worker (/metrics)  not answering (")
    assert WorkerMetrics(None).read() == PipelineLine(
        None, problem="metrics off (worker.metrics_port = 0)"
    )


def test_every_metric_the_view_reads_is_documented() -> None:
    doc = (ROOT / "docs" / "metrics.md").read_text()
    documented = set(re.findall(r"^\| `(driftline_[a-z_]+)`", doc, flags=re.MULTILINE))
    read = {value for name, value in vars(metrics).items() if name.isupper() and "_" in name}
    read = {value for value in read if isinstance(value, str) and value.startswith("driftline_")}
    assert len(read) == 8
    assert read <= documented


def frame(worker: PipelineLine) -> Frame:
    return Frame(
        phase="traffic",
        elapsed_s=12.0,
        duration_s=60.0,
        spans_sent=2_000,
        spans_per_s=250.0,
        events_sent=900,
        events_seen=850,
        worker=worker,
        workflows={},
        incidents=[],
        alerts=[],
        explained_by={},
        pages=[],
        paging="local",
        run_started=0.0,
    )


def test_the_live_view_shows_the_workers_line() -> None:
    reading = WorkerReading(1.0, 2_000, 0, 700, 35, 9, 120, True, 0)
    line = PipelineLine(reading, spans_per_s=248.0, calls_per_s=80.0)
    screen = io.StringIO()
    LiveView(screen, tty=True, width=200).update(frame(line), [], [])
    drawn = [row.removesuffix("\x1b[K") for row in screen.getvalue().split("\n")]
    assert "traffic  spans sent   250/s   events in llm_events 850 of 900 sent" in drawn
    assert line.text() in drawn
    log = io.StringIO()
    LiveView(log, tty=False).update(frame(PipelineLine(None, problem="not answering")), [], [])
    assert "spans sent   250/s  worker not answering  events 850 of 900" in log.getvalue()
    log = io.StringIO()
    LiveView(log, tty=False).update(frame(line), [], [])
    assert "spans sent   250/s  worker in   248/s lag 35  events 850 of 900" in log.getvalue()
