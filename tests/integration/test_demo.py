"""``driftline demo`` as a user runs it: a real subprocess, its own stack, no mocks.

One 60 s demo (the scripted timeline compressed to fit, the 20 s hold-down as shipped) whose
output, store, delivery log and files are checked afterwards (pages: one trigger per dedup
key, the alerts of incidents that end resolved, those of the one that lasts still open), and
one run interrupted with SIGINT (Ctrl-C) that must stop without orphans and still report. The
local PagerDuty stand-in is also exercised directly over HTTP.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from driftline.config import load_settings
from driftline.dashboards.build import dashboard_specs
from driftline.dashboards.panels import BuildContext
from driftline.demo.receiver import PagerDutyReceiver
from driftline.store import open_store
from driftline.store.queries import run_query
from tests.integration.conftest import ROOT, descendants, wait_all_gone

pytestmark = pytest.mark.integration

DURATION_S = 60
RUN_TIMEOUT_S = 200
TOTALS = re.compile(
    r"total: ([\d,]+) requests, ([\d.]+) USD; the store holds ([\d,]+) requests, ([\d.]+) USD"
    r"(?: \(([\d,]+) events were sent\))?"
)


@dataclass
class DemoProcess:
    data_dir: Path
    returncode: int | None = None
    lines: list[str] = field(default_factory=list)
    pids: set[int] = field(default_factory=set)  # every descendant seen while it ran

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


def _start(data_dir: Path) -> tuple[subprocess.Popen[str], DemoProcess]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAGERDUTY_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "driftline.cli",
            "demo",
            "--duration",
            str(DURATION_S),
            "--data-dir",
            str(data_dir),
            "--plain",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a terminal's Ctrl-C goes to this process alone
    )
    run = DemoProcess(data_dir)

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            run.lines.append(line.rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()
    return proc, run


def _wait(proc: subprocess.Popen[str], run: DemoProcess, timeout_s: float) -> DemoProcess:
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None:
        run.pids |= descendants(proc.pid)
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"demo still running after {timeout_s}s:\n{run.output[-3000:]}")
        time.sleep(0.5)
    time.sleep(0.5)  # the reader thread drains the pipe
    run.returncode = proc.returncode
    return run


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoProcess]:
    proc, run = _start(tmp_path_factory.mktemp("demo") / "var")
    yield _wait(proc, run, RUN_TIMEOUT_S)


def _store_rows(run: DemoProcess, sql: str) -> list[dict[str, Any]]:
    settings = load_settings(run.data_dir / "driftline.toml")
    store = open_store(settings.store.url, settings.store)
    try:
        return store.query(sql).to_pylist()
    finally:
        store.close()


def test_demo_exits_cleanly_without_orphans(demo: DemoProcess) -> None:
    assert demo.returncode == 0, demo.output[-4000:]
    assert "demo finished in" in demo.output
    assert demo.pids, "the demo started no processes"
    assert not wait_all_gone(demo.pids), "processes of the demo survived it"


def test_incidents_open_alerts_of_several_kinds(demo: DemoProcess) -> None:
    kinds = {r["kind"] for r in _store_rows(demo, "SELECT DISTINCT kind FROM driftline.llm_alerts")}
    assert len(kinds) >= 2, kinds
    detected = {
        line.split()[1]
        for line in demo.lines
        if re.match(r"^\s+\d\d:\d\d(-\d\d:\d\d)?\s+\S+\s+detected after", line)
    }
    # Routing and retry budgets need no warm-up: these two must be caught in any run.
    assert {"retry-storm", "unapproved-model"} <= detected, demo.output[-4000:]
    resolved = _store_rows(
        demo, "SELECT count() AS n FROM driftline.llm_alerts_current WHERE state = 'resolved'"
    )
    assert resolved[0]["n"] >= 1, "no alert resolved after its incident ended"


def test_local_receiver_got_the_triggers(demo: DemoProcess) -> None:
    match = re.search(r"the receiver accepted (\d+) triggers and (\d+) resolves", demo.output)
    assert match is not None and int(match[1]) > 0, demo.output[-2000:]
    rows = _store_rows(
        demo,
        "SELECT event_action, target, count() AS n FROM driftline.alert_deliveries"
        " WHERE outcome = 'delivered' GROUP BY event_action, target",
    )
    delivered = {r["event_action"]: r["n"] for r in rows if "127.0.0.1" in r["target"]}
    assert delivered.get("trigger") == int(match[1]), rows
    assert delivered.get("resolve", 0) == int(match[2]), rows


def test_cost_table_totals_equal_what_the_store_holds(demo: DemoProcess) -> None:
    match = TOTALS.search(demo.output)
    assert match is not None, demo.output[-3000:]
    printed_requests, printed_cost = int(match[1].replace(",", "")), float(match[2])
    held = _store_rows(
        demo,
        "SELECT count() AS n, sum(cost_usd) AS cost, min(start_ts) AS a, max(end_ts) AS b"
        " FROM driftline.llm_requests",
    )[0]
    assert printed_requests == held["n"] > 0
    assert printed_cost == pytest.approx(held["cost"], abs=1e-4)
    assert match[5] is not None and int(match[5].replace(",", "")) == held["n"], (
        "events sent and events stored differ"
    )
    settings = load_settings(demo.data_dir / "driftline.toml")
    store = open_store(settings.store.url, settings.store)
    try:
        window = {"from": held["a"], "to": held["b"] + timedelta(seconds=1)}
        by_workflow = run_query(store, "cost_by_workflow", **window).to_pylist()
    finally:
        store.close()
    assert sum(r["requests"] for r in by_workflow) == held["n"]
    assert sum(r["spend_usd"] or 0.0 for r in by_workflow) == pytest.approx(held["cost"])
    assert {r["workflow"] for r in by_workflow} == {
        "support-chat",
        "rag-search",
        "agent-planner",
        "batch-summarizer",
    }


def test_dashboards_and_report_are_written_with_data(demo: DemoProcess) -> None:
    boards = sorted((demo.data_dir / "dashboards").glob("*.json"))
    assert boards
    for path in boards:
        assert json.loads(path.read_text())["panels"], path
    index = demo.data_dir / "report" / "index.html"
    assert index.is_file()
    images = re.findall(r"src=['\"]([^'\"]+\.png)['\"]", index.read_text())
    assert images and all((index.parent / i).stat().st_size > 0 for i in images)
    # Every panel of every dashboard counts, the empty ones too, and each must have data:
    # the budget panels read the demo's monthly budgets, cache savings the model prices.
    specs = [p for s in dashboard_specs(_context(demo)) for p in s.panels]
    chart_specs = [p for p in specs if p.kind in ("timeseries", "barchart")]
    match = re.search(r"\((\d+) of (\d+) charts with data\)", demo.output)
    assert match is not None
    print(f"\ndemo report: {match[0]}")
    assert (int(match[1]), int(match[2])) == (len(chart_specs), len(chart_specs)), (
        match[0] + "\n" + "\n".join(line for line in demo.lines if "no data in" in line)
    )
    summary = re.search(r"<p id='summary'>(\d+) of (\d+) panels with data", index.read_text())
    assert summary is not None
    assert (int(summary[1]), int(summary[2])) == (len(specs), len(specs)), summary[0]


def _context(run: DemoProcess) -> BuildContext:
    return BuildContext.from_settings(load_settings(run.data_dir / "driftline.toml"))


def test_monthly_budgets_are_charted_without_paging(demo: DemoProcess) -> None:
    # The demo's budgets exist for the burn-rate panels; no scripted incident is a burn.
    assert _context(demo).budgets
    burns = _store_rows(
        demo,
        "SELECT count() AS n FROM driftline.llm_alerts WHERE metric LIKE 'cost_burn_rate%'",
    )
    assert burns[0]["n"] == 0


def test_one_page_per_incident_ended_ones_resolved_lasting_ones_open(demo: DemoProcess) -> None:
    """The alert lifecycle as an on-call engineer sees it (a 20 s hold-down, not lengthened)."""
    assert "no dedup key triggered twice" in demo.output, demo.output[-3000:]
    twice = _store_rows(
        demo,
        "SELECT dedup_key, count() AS n FROM driftline.alert_deliveries"
        " WHERE outcome = 'delivered' AND event_action = 'trigger'"
        " GROUP BY dedup_key HAVING n > 1",
    )
    assert twice == []
    verdicts = {
        line.split()[1]: line
        for line in demo.lines
        if re.match(r"^\s+\d\d:\d\d(-\d\d:\d\d)?\s+\S+\s+detected after", line)
    }
    # The retry storm and the shadow routing end within the run: their alerts resolved.
    for kind in ("retry-storm", "unapproved-model"):
        assert "all resolved" in verdicts[kind], verdicts[kind]
    # The cost runaway lasts to the end: its alerts are still open.
    assert "all open (it lasts)" in verdicts["cost-runaway"], verdicts["cost-runaway"]


def test_ctrl_c_stops_cleanly_and_still_reports(tmp_path: Path) -> None:
    proc, run = _start(tmp_path / "var")
    deadline = time.monotonic() + 90
    while not any("traffic starts" in line for line in run.lines):
        assert proc.poll() is None and time.monotonic() < deadline, run.output
        run.pids |= descendants(proc.pid)
        time.sleep(0.5)
    time.sleep(12)
    run.pids |= descendants(proc.pid)
    os.kill(proc.pid, signal.SIGINT)
    _wait(proc, run, 90)
    assert run.returncode == 130, run.output[-3000:]
    assert "interrupted" in run.output
    assert TOTALS.search(run.output), run.output[-3000:]
    assert not wait_all_gone(run.pids), "processes survived Ctrl-C"


# --- the local PagerDuty stand-in over real HTTP -------------------------------------------


def _post(url: str, body: Any) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_receiver_answers_like_the_events_api() -> None:
    trigger = {
        "routing_key": "secret-key",
        "event_action": "trigger",
        "dedup_key": "drift/support-chat/output_tokens/abc",
        "payload": {
            "summary": "output tokens doubled",
            "source": "driftline",
            "severity": "error",
            "component": "support-chat",
            "class": "drift",
        },
        "links": [{"href": "http://localhost:3000/d/driftline-drift", "text": "dashboard"}],
    }
    with PagerDutyReceiver() as receiver:
        status, body = _post(receiver.events_url, trigger)
        assert (status, body["status"], body["dedup_key"]) == (202, "success", trigger["dedup_key"])
        status, body = _post(receiver.events_url, {**trigger, "payload": {"summary": "x"}})
        assert status == 400 and body["status"] == "invalid event"
        assert any("severity" in e for e in body["errors"])
        status, body = _post(receiver.events_url, {"routing_key": "k", "event_action": "resolve"})
        assert status == 400 and body["errors"] == ["dedup_key is required for resolve"]
        status, _ = _post(receiver.events_url, {**trigger, "dedup_key": "k" * 256})
        assert status == 400
        status, _ = _post(receiver.events_url, b"not json")
        assert status == 400
        status, _ = _post(receiver.url + "/v1/enqueue", trigger)
        assert status == 404
        status, body = _post(
            receiver.events_url,
            {"routing_key": "k", "event_action": "resolve", "dedup_key": trigger["dedup_key"]},
        )
        assert status == 202
        pages = receiver.pages()
        assert [(p.action, p.dedup_key) for p in pages] == [
            ("trigger", trigger["dedup_key"]),
            ("resolve", trigger["dedup_key"]),
        ]
        assert pages[0].severity == "error" and pages[0].component == "support-chat"
        assert receiver.rejected == 4  # the 404 was not an event
        assert "secret-key" not in repr(pages)
