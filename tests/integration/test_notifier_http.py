"""The notifier on the wall clock: real pacing, real timeouts, replay's zero-config path.

Only the local receiver is needed (no broker), so these run with the unit tests.
"""

from __future__ import annotations

import itertools
import logging
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from driftline.config import PagerDutySettings
from driftline.streams.notifier import Notifier, RetryPolicy
from driftline.streams.notifier.replay import as_transitions, notify_sync, outcome_counts
from driftline.streams.notifier.routing import ENV_EVENTS_URL, ENV_ROUTING_KEY

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.unit.test_notifier_payload import KEY, MIN, OPENED, make_alert  # noqa: E402
from tests.utils.http_receiver import HttpReceiver  # noqa: E402

pytestmark = pytest.mark.integration


def final_states(n: int) -> list[dict[str, Any]]:
    """What ``driftline replay`` prints: alert records in their final state."""
    alerts = []
    for i in range(n):
        alert = make_alert(
            alert_id=f"r-{i}", dedup_key=f"drift:wf{i}:output_tokens:b", workflow=f"wf{i}"
        )
        del alert["transition"]
        if i % 2:
            alert.update(state="resolved", resolved_at=OPENED + 9 * MIN)
        alerts.append(alert)
    return alerts


def test_replay_notify_with_zero_config(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with HttpReceiver(validate_pagerduty=True) as receiver:
        monkeypatch.setenv(ENV_ROUTING_KEY, KEY)
        monkeypatch.setenv(ENV_EVENTS_URL, receiver.url)
        records = notify_sync(final_states(4))
        bodies = receiver.bodies()
    assert outcome_counts(records) == {"delivered": 6}  # 4 triggers + 2 resolves
    assert [(b["dedup_key"], b["event_action"]) for b in bodies] == [
        ("drift:wf0:output_tokens:b", "trigger"),
        ("drift:wf1:output_tokens:b", "trigger"),
        ("drift:wf1:output_tokens:b", "resolve"),
        ("drift:wf2:output_tokens:b", "trigger"),
        ("drift:wf3:output_tokens:b", "trigger"),
        ("drift:wf3:output_tokens:b", "resolve"),
    ]
    assert all(b["routing_key"] == KEY for b in bodies)
    assert KEY not in caplog.text


def test_replay_paces_by_the_rate_limit_on_the_wall_clock() -> None:
    with HttpReceiver() as receiver:
        env = {ENV_ROUTING_KEY: KEY, ENV_EVENTS_URL: receiver.url}
        settings = PagerDutySettings(max_events_per_minute=600, events_url=receiver.url)
        began = time.perf_counter()
        records = notify_sync(final_states(6), settings, environ=env, burst=1)
        elapsed = time.perf_counter() - began
        arrived = len(receiver.requests)
    assert [r["outcome"] for r in records] == ["delivered"] * 9 and arrived == 9
    # 9 events at 10/s with a burst of 1: at least 0.8 s between the first send and the last.
    sent = [r["sent_at"] for r in records]
    assert sent[-1] - sent[0] >= 790_000
    assert min(b - a for a, b in itertools.pairwise(sent)) >= 90_000
    assert elapsed < 10  # event time (minutes apart) is not slept through


def test_real_timeout_then_delivery() -> None:
    with HttpReceiver() as receiver:
        receiver.script("hang", 500)
        env = {ENV_ROUTING_KEY: KEY}
        notifier = Notifier.from_settings(
            PagerDutySettings(events_url=receiver.url, max_events_per_minute=120),
            environ=env,
            timeout_s=0.3,
            retry=RetryPolicy(base_s=0.05, cap_s=0.2),
        )
        records = notifier.deliver_sync(as_transitions([make_alert(transition="open")]))
    assert [(r["outcome"], r["status_code"]) for r in records] == [
        ("retrying", 0),
        ("retrying", 500),
        ("delivered", 202),
    ]
    assert 300 <= records[0]["latency_ms"] < 2000
