"""``driftline replay --notify``: replayed alerts through the real notifier to a real receiver.

The receiver is a real HTTP server on a loopback port (tests/utils/http_receiver.py)
that validates Events API v2 bodies as PagerDuty would. Time for the rate-limit
pacing test is injected, never slept.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftline.cli import main
from driftline.commands.replay import notify_alerts, read_ndjson, replay
from driftline.config import load_settings
from driftline.schemas.event import EVENT_FIELDS

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # tests.utils is a package of the repository root
    sys.path.insert(0, str(REPO))

from tests.unit.test_replay import CONFIG, write_events  # noqa: E402
from tests.utils.http_receiver import HttpReceiver  # noqa: E402

KEY = "R0UT1NG-replay-0123456789abcdef"
STAGING_KEY = "STAG1NG-replay-fedcba9876543210"
# What tests/unit/test_replay.py's recording opens and resolves (7 transitions).
DRIFT_KEYS = {"drift/chat/input_tokens/b1", "drift/chat/output_tokens/b1"}
BUDGET_KEY = "budget/chat/tokens_per_request/"
TRANSITIONS = 7


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    with HttpReceiver(validate_pagerduty=True) as server:
        yield server


@pytest.fixture
def events(tmp_path: Path) -> Path:
    path = tmp_path / "events.ndjson"
    write_events(path)
    return path


def write_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "driftline.toml"
    path.write_text(CONFIG + extra)
    return path


def run_replay(
    capsys: pytest.CaptureFixture[str], events: Path, config: Path, *flags: str
) -> tuple[int, str, str]:
    code = main(["replay", str(events), "--config", str(config), *flags])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_zero_config_pages_through_environment(
    receiver: HttpReceiver,
    events: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("PAGERDUTY_ROUTING_KEY", KEY)
    monkeypatch.setenv("PAGERDUTY_EVENTS_URL", receiver.url)
    config = write_config(tmp_path)  # no [pagerduty] section at all

    _, plain, _ = run_replay(capsys, events, config)
    code, out, err = run_replay(capsys, events, config, "--notify")

    assert code == 0, err
    assert out == plain  # stdout stays the NDJSON alerts
    bodies = receiver.bodies()
    assert all(r.answered == 202 for r in receiver.requests), bodies
    assert all(r.path == "/v2/enqueue" for r in receiver.requests)
    assert {b["routing_key"] for b in bodies} == {KEY}
    sent = [(b["event_action"], b["dedup_key"]) for b in bodies]
    printed = [json.loads(line) for line in out.splitlines()]
    expected = [
        ("trigger" if r["transition"] == "open" else "resolve", r["dedup_key"]) for r in printed
    ]
    assert sorted(sent) == sorted(expected) and len(sent) == TRANSITIONS
    # Per alert the order holds: trigger, resolve, trigger again for the reopened budget.
    budget = [action for action, key in sent if key == BUDGET_KEY]
    assert budget == ["trigger", "resolve", "trigger"]
    assert f"notified {TRANSITIONS} alert transitions: delivered={TRANSITIONS}" in err
    assert "default@127.0.0.1" in err
    assert KEY not in err + out + caplog.text


def test_configured_routes_decide_destination_and_key(
    receiver: HttpReceiver,
    events: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("PAGERDUTY_ROUTING_KEY", raising=False)
    monkeypatch.setenv("PAGERDUTY_EVENTS_URL", "http://127.0.0.1:9/never-used")
    monkeypatch.setenv("STAGING_PD_KEY", STAGING_KEY)
    config = write_config(
        tmp_path,
        f"""
[pagerduty]
events_url = "{receiver.url}"

[[pagerduty.routes]]
workflow = "ch*"
min_severity = "error"
routing_key_env = "STAGING_PD_KEY"

[[pagerduty.routes]]
kind = "webhook"
workflow = "*"
min_severity = "warning"
url = "{receiver.base_url}/hooks/staging"
""",
    )

    code, _, err = run_replay(capsys, events, config, "--notify")

    assert code == 0, err
    paged = [r.json() for r in receiver.requests if r.path == "/v2/enqueue"]
    hooked = [r.json() for r in receiver.requests if r.path == "/hooks/staging"]
    # Only the error-severity drift alerts page; every alert reaches the chat webhook.
    assert {b["dedup_key"] for b in paged} == DRIFT_KEYS
    assert sorted(b["event_action"] for b in paged) == ["resolve"] * 2 + ["trigger"] * 2
    assert {b["routing_key"] for b in paged} == {STAGING_KEY}
    assert len(hooked) == TRANSITIONS and all("text" in b for b in hooked)
    assert f"delivered={4 + TRANSITIONS}" in err
    assert "pagerduty[0]@127.0.0.1" in err and "webhook[1]@127.0.0.1" in err
    assert STAGING_KEY not in err


def test_rejected_delivery_is_reported_and_fails_the_run(
    receiver: HttpReceiver,
    events: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PAGERDUTY_ROUTING_KEY", KEY)
    monkeypatch.setenv("PAGERDUTY_EVENTS_URL", receiver.url)
    receiver.respond_with(lambda request: 400 if request.json()["dedup_key"] == BUDGET_KEY else 202)

    code, out, err = run_replay(capsys, events, write_config(tmp_path), "--notify")

    assert code == 1
    assert len(out.splitlines()) == TRANSITIONS
    assert "delivered=4 failed_permanent=3" in err
    failed_lines = [line for line in err.splitlines() if ": failed_permanent: " in line]
    assert len(failed_lines) == 3
    assert all(BUDGET_KEY in line and "HTTP 400" in line for line in failed_lines)
    assert len(receiver.requests) == TRANSITIONS  # a 400 is not retried
    assert KEY not in err


def test_missing_routing_key_sends_nothing(
    receiver: HttpReceiver,
    events: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("PAGERDUTY_ROUTING_KEY", raising=False)
    monkeypatch.setenv("PAGERDUTY_EVENTS_URL", receiver.url)

    code, out, err = run_replay(capsys, events, write_config(tmp_path), "--notify")

    assert code == 2
    assert len(out.splitlines()) == TRANSITIONS
    assert "PAGERDUTY_ROUTING_KEY is not set" in err and "nothing sent" in err
    assert receiver.requests == []


class FakeClock:
    """``clock`` and ``sleep`` for the notifier: sleeping only moves the clock."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def test_paced_by_rate_limit_not_by_event_time(
    receiver: HttpReceiver, events: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, "\n[pagerduty]\nmax_events_per_minute = 6\n")
    settings = load_settings(config)
    records = replay(settings, read_ndjson(str(events), EVENT_FIELDS))
    event_span_s = (records[-1]["event_ts"] - records[0]["event_ts"]) / 1e6
    clock = FakeClock(now=1_800_000_000.0)
    env = {"PAGERDUTY_ROUTING_KEY": KEY, "PAGERDUTY_EVENTS_URL": receiver.url}

    started = time.monotonic()
    code = notify_alerts(records, settings, environ=env, clock=clock, sleep=clock.sleep, burst=1)
    wall_s = time.monotonic() - started

    assert code == 0
    assert len(receiver.requests) == TRANSITIONS
    # 6 events/min with a burst of 1: one send every 10 s of (injected) time, so 7 sends
    # take 60 s; the recording spans over 20 minutes of event time, none of it slept.
    assert clock.now - 1_800_000_000.0 == pytest.approx(10.0 * (TRANSITIONS - 1))
    assert event_span_s > 1200
    assert sum(clock.slept) < event_span_s / 10
    assert wall_s < 10  # nothing really waited for the limit
    assert "delivered=7" in capsys.readouterr().err
