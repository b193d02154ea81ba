"""``driftline status`` against local HTTP servers serving canned /metrics and /readyz."""

from __future__ import annotations

import re
import socket
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from driftline.cli import main
from driftline.commands.status import parse_metrics
from driftline.streams.telemetry import render, worker_families
from tests.utils.local_server import LocalServer

CANNED = """\
# HELP driftline_build_info The running driftline version.
# TYPE driftline_build_info gauge
driftline_build_info{{version="0.1.0"}} 1
# TYPE driftline_worker_start_time_seconds gauge
driftline_worker_start_time_seconds {started}
# TYPE driftline_spans_received_total counter
driftline_spans_received_total {spans}
# TYPE driftline_spans_rejected_total counter
driftline_spans_rejected_total{{reason="not_otlp"}} {rejected}
driftline_spans_rejected_total{{reason="negative_tokens"}} 1
# TYPE driftline_store_rejected_records_total counter
driftline_store_rejected_records_total{{kind="events"}} 2
# TYPE driftline_llm_events_bad_messages_total counter
driftline_llm_events_bad_messages_total 3
# TYPE driftline_events_decoded_total counter
driftline_events_decoded_total {events}
# TYPE driftline_events_completed_total counter
driftline_events_completed_total 100
# TYPE driftline_kafka_assigned_partitions gauge
driftline_kafka_assigned_partitions{{topic="otlp_spans"}} 4
driftline_kafka_assigned_partitions{{topic="llm_spans"}} 4
driftline_kafka_assigned_partitions{{topic="llm_events"}} 2
driftline_kafka_assigned_partitions{{topic="llm_alerts"}} 0
# TYPE driftline_kafka_consumer_lag_records gauge
driftline_kafka_consumer_lag_records{{topic="otlp_spans",partition="0"}} 12
driftline_kafka_consumer_lag_records{{topic="otlp_spans",partition="1"}} 30
driftline_kafka_consumer_lag_records{{topic="llm_events",partition="3"}} 5
# TYPE driftline_store_reachable gauge
driftline_store_reachable {reachable}
# TYPE driftline_store_pending_rows gauge
driftline_store_pending_rows 1500
# TYPE driftline_store_consecutive_failures gauge
driftline_store_consecutive_failures {failures}
# TYPE driftline_store_write_failures_total counter
driftline_store_write_failures_total 9
# TYPE driftline_open_traces gauge
driftline_open_traces 7
# TYPE driftline_workflows_tracked gauge
driftline_workflows_tracked 3
# TYPE driftline_page_deliveries_total counter
driftline_page_deliveries_total{{outcome="delivered"}} 12
driftline_page_deliveries_total{{outcome="failed_permanent"}} 1
driftline_page_deliveries_total{{outcome="retrying"}} 4
# TYPE driftline_alert_transitions_total counter
driftline_alert_transitions_total{{transition="open"}} 3
driftline_alert_transitions_total{{transition="resolve"}} 2
# TYPE driftline_pipeline_alert_open gauge
driftline_pipeline_alert_open{{condition="consumer_lag"}} 0
driftline_pipeline_alert_open{{condition="store_failing"}} {store_alert}
# TYPE driftline_heartbeats_sent_total counter
driftline_heartbeats_sent_total 41
"""


class FakeWorker(LocalServer):
    """Serves /metrics (counters grow by ``step`` at each scrape) and /readyz."""

    def __init__(self, *, ready: bool = True, failing_store: bool = False) -> None:
        self.scrapes = 0
        self.ready = ready
        self.failing_store = failing_store
        self.paths: list[str] = []
        worker = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                worker.paths.append(self.path)
                if self.path == "/metrics":
                    status, body = 200, worker.metrics()
                elif self.path == "/readyz":
                    status, body = worker.readyz()
                else:
                    status, body = 404, "not found\n"
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(Handler)

    def readyz(self) -> tuple[int, str]:
        ok = self.ready and not self.failing_store
        reason = (
            "ready: 10 partitions assigned"
            if ok
            else "not ready: store unavailable (4 failed writes in a row)"
            if self.failing_store
            else "not ready: rebalancing"
        )
        return (200 if ok else 503), reason + "\n"

    def metrics(self) -> str:
        n = self.scrapes
        self.scrapes += 1
        return CANNED.format(
            started=time.time() - 7290,
            spans=1000 + 500 * n,  # +500 between scrapes
            rejected=40 + 10 * n,  # +10
            events=900 + 400 * n,
            reachable=0 if self.failing_store else 1,
            failures=4 if self.failing_store else 0,
            store_alert=1 if self.failing_store else 0,
        )


@pytest.fixture
def worker() -> Iterator[FakeWorker]:
    with FakeWorker() as running:
        yield running


def test_once_prints_totals_and_exits_0_for_a_ready_worker(
    worker: FakeWorker, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--worker", worker.url, "--once"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [
        f"worker {worker.url} (driftline 0.1.0, up 2 h 1 min)",
        "  ready         yes: ready: 10 partitions assigned",
        "  partitions    otlp_spans 4, llm_spans 4, llm_events 2, llm_alerts 0",
        "  consumer lag  otlp_spans 42, llm_spans 0, llm_events 5, llm_alerts 0 records behind",
        "  spans         1,000 received, 41 rejected; events 900 decoded, 100 completed "
        "(since start)",
        "  dead letters  46 since start "
        "(not_otlp 40, bad_llm_events 3, events 2, negative_tokens 1)",
        "  store         reachable; 1,500 rows pending; 0 failed writes in a row (9 since start)",
        "  traces        7 open; workflows tracked 3",
        "  pages         12 delivered, 1 failed, 4 retries; alerts 3 opened, 2 resolved",
        "  self-alerts   none open",
        "  heartbeat     41 sent, 0 failed",
        "1 worker: all ready",
    ]
    assert worker.paths == ["/metrics", "/readyz"]  # read-only: two GETs


def test_rates_come_from_two_scrapes(
    worker: FakeWorker, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["status", "--worker", worker.url.removeprefix("http://"), "--interval", "0.5"]) == 0
    )
    lines = capsys.readouterr().out.splitlines()
    spans = next(line for line in lines if line.startswith("  spans"))
    # 500 spans, 10 rejects and 400 events in about half a second (the server answers in ms).
    received = float(spans.split()[1].removesuffix("/s").replace(",", ""))
    assert 700 <= received <= 1000, spans
    assert ("/s rejected; events" in spans and "(over 0 s)" in spans) or "(over 1 s)" in spans
    dead = next(line for line in lines if line.startswith("  dead letters"))
    assert dead.endswith(
        "(56 since start: not_otlp 50, bad_llm_events 3, events 2, negative_tokens 1)"
    ), dead
    assert worker.paths == ["/metrics", "/readyz", "/metrics", "/readyz"]


def test_a_failing_worker_exits_1_and_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    with FakeWorker(failing_store=True) as bad, FakeWorker() as good:
        code = main(["status", "--worker", good.url, "--worker", bad.url, "--once"])
    assert code == 1
    out = capsys.readouterr().out
    assert "  ready         NO: not ready: store unavailable (4 failed writes in a row)" in out
    assert "  store         FAILING; 1,500 rows pending; 4 failed writes in a row" in out
    assert "  self-alerts   OPEN: store_failing" in out
    assert out.splitlines()[-1] == "2 workers: 1 failing or not ready"


def test_not_ready_alone_is_1(capsys: pytest.CaptureFixture[str]) -> None:
    with FakeWorker(ready=False) as rebalancing:
        assert main(["status", "--worker", rebalancing.url, "--once"]) == 1
    assert "  ready         NO: not ready: rebalancing" in capsys.readouterr().out


def test_a_worker_that_does_not_answer_is_1(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connection refused
        assert main(["status", "--worker", f"127.0.0.1:{port}", "--once"]) == 1
    out = capsys.readouterr().out
    assert f"worker http://127.0.0.1:{port}\n  FAIL          no answer (ConnectError" in out


def test_usage_errors_are_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["status", "--worker", "ftp://x:1"]) == 2
    assert "give http://HOST:PORT" in capsys.readouterr().err
    assert main(["status", "--worker", "127.0.0.1:1", "--interval", "0"]) == 2
    assert "--interval must be a number of seconds in (0, 3600]" in capsys.readouterr().err
    config = tmp_path / "driftline.toml"
    config.write_text("[worker]\nmetrics_port = 0\n")
    assert main(["--config", str(config), "status"]) == 2
    assert "worker.metrics_port is 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["status", "--bogus"])
    assert exited.value.code == 2


def test_default_worker_is_the_configured_metrics_port(
    worker: FakeWorker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "driftline.toml"
    port = worker.url.rsplit(":", 1)[1]
    config.write_text(f'[worker]\nmetrics_host = "0.0.0.0"\nmetrics_port = {port}\n')
    assert main(["--config", str(config), "status", "--once"]) == 0
    assert capsys.readouterr().out.startswith(f"worker http://127.0.0.1:{port} ")


def test_help_lists_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["status", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "exit codes: 0 every worker answered, is ready" in text
    assert "1 a worker is not ready, does not answer, or has an alert about itself open" in text
    assert "2 could not run" in text


def test_reads_what_the_worker_really_exports() -> None:
    """The names status reads are the ones streams.telemetry renders (no drift between them)."""
    consumer = SimpleNamespace(
        assignment=lambda: set(), highwater=lambda tp: None, _committed_offset={}, _read_offset={}
    )
    app = SimpleNamespace(
        consumer=consumer,
        rebalancing=False,
        rebalancing_count=0,
        crashed=False,
        should_stop=False,
        assignor=SimpleNamespace(assigned_actives=lambda: set()),
    )
    governance = SimpleNamespace(
        monitor=SimpleNamespace(tracked_workflows=0),
        sinks={
            "events": SimpleNamespace(store="s", failures=0, pending_rows=0, last_success_s=None)
        },
    )
    p = SimpleNamespace(
        app=app,
        counters=Counter({"worker.ready": 1}),
        assemblers={},
        closed_elsewhere=Counter(),
        governance=governance,
        started_s=0.0,
        self_watch=None,
    )
    text = render(worker_families(p))
    exported = set(re.findall(r"^# TYPE (\S+) ", text, flags=re.MULTILINE))
    assert set(parse_metrics(text)) <= exported
    source = (Path(__file__).resolve().parents[2] / "driftline/commands/status.py").read_text()
    read = set(re.findall(r'"(driftline_[a-z_]+)"', source))
    assert read - exported == set()


class HostileWorker(FakeWorker):
    """A peer that lies: control characters and a forged line in labels and /readyz, NaN."""

    def metrics(self) -> str:
        return (
            'driftline_build_info{version="1.0\x1b]0;HACKED\x07\x1b[2J"} 1\n'
            'driftline_pipeline_alert_open{condition="c\\nFAKE LINE: all ready"} 1\n'
            "driftline_spans_received_total NaN\n"
            "driftline_events_decoded_total +Inf\n"
        )

    def readyz(self) -> tuple[int, str]:
        return 200, "ready \x1b[31mRED\x1b]0;HACKED\x07\n"


def test_what_a_worker_answers_cannot_reach_the_terminal_raw(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with HostileWorker() as hostile:
        code = main(["status", "--worker", hostile.url, "--once"])
    out = capsys.readouterr().out
    assert code in (0, 1), out
    assert "\x1b" not in out and "\x07" not in out, out
    assert not any(line.startswith("FAKE LINE") for line in out.splitlines()), out
    assert "nan" in out.lower()


@pytest.mark.parametrize("worker_url", ["http://127.0.0.1:abc", "http://127.0.0.1:99999"])
def test_a_worker_url_with_a_bad_port_is_an_error_not_a_traceback(
    worker_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--worker", worker_url, "--once"]) == 2
    assert "give http://HOST:PORT" in capsys.readouterr().err
