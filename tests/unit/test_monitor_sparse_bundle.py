"""A bundle with little traffic (a fallback model at night) is not taken for retired.

``detectors.canary_active_s`` without a call retires a bundle, and with it the shift
keeping its drift alerts open. A bundle whose calls are always further apart than that
would see its alert resolve at every gap and reopen at its next call: retired means idle
for that long or for ``RETIRED_GAPS`` of its own mean gap, whichever is longer.
"""

from __future__ import annotations

from driftline.config import Settings
from driftline.streams.monitor import Monitor
from driftline.streams.monitor.untracked import RETIRED_GAPS
from tests.unit.test_monitor import T0, S, event, run, small_settings

ACTIVE_S = 600


def sparse_settings() -> Settings:
    return small_settings(enabled_metrics=["input_tokens"], canary_active_s=ACTIVE_S)


def traffic(sparse_gap_s: int, sparse_calls: int, shifted_from: int) -> list[dict]:
    """A busy bundle b1 (a call every 10 s) and a sparse one, b2, every ``sparse_gap_s``,
    whose input tokens grow x4 from its ``shifted_from``-th call on."""
    end_s = sparse_calls * sparse_gap_s
    busy = [event(i, T0 + i * 10 * S, 400 + i % 7) for i in range(end_s // 10)]
    sparse = [
        event(
            100_000 + k,
            T0 + k * sparse_gap_s * S + 5 * S,
            (400 + k % 7) * (4 if k >= shifted_from else 1),
            bundle_id="b2",
            response_model="gpt-4o-mini",
        )
        for k in range(sparse_calls)
    ]
    return sorted(busy + sparse, key=lambda e: e["end_ts"])


def b2_drift(out: list[dict]) -> list[str]:
    return [
        t["transition"]
        for t in out
        if t["bundle_id"] == "b2" and t["metric"] == "input_tokens" and t["transition"] != "update"
    ]


def test_a_sparse_bundle_keeps_its_alert_open_while_its_shift_lasts() -> None:
    monitor = Monitor(sparse_settings())
    out = run(monitor, traffic(ACTIVE_S + 100, sparse_calls=70, shifted_from=60))
    assert b2_drift(out) == ["open"]  # once, not at every gap between its calls


def test_a_sparse_bundle_that_stops_is_retired_after_its_own_gaps() -> None:
    monitor = Monitor(sparse_settings())
    gap_s = ACTIVE_S + 100
    events = traffic(gap_s, sparse_calls=70, shifted_from=60)
    quiet_s = (RETIRED_GAPS + 2) * gap_s  # b2 stops; b1 goes on
    last = max(e["end_ts"] for e in events)
    tail = [event(500_000 + i, last + (i + 1) * 10 * S, 400 + i % 7) for i in range(quiet_s // 10)]
    out = run(monitor, events + tail, batch=2048)
    assert b2_drift(out) == ["open", "resolve"]
