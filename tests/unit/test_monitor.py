"""The monitor engine: alert lifecycle, budgets, routing, canary, snapshot/restore."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from driftline.config import AlertSettings, DetectorSettings, Settings
from driftline.schemas.alert import TRANSITION_FIELD_NAMES
from driftline.schemas.event import EVENT_FIELDS, TRACE_FIELDS, from_wire
from driftline.streams.monitor import Monitor, SnapshotError

SETTLE_S_DEFAULT = DetectorSettings().settle_s

T0 = 1_700_000_000_000_000
S = 1_000_000


def event(i: int, ts: int, tokens: float, **fields: Any) -> dict[str, Any]:
    e = from_wire({}, EVENT_FIELDS)
    e.update(
        trace_id=f"t{i}",
        span_id=f"s{i}",
        start_ts=ts - 1000,
        end_ts=ts,
        workflow="chat",
        bundle_id="b1",
        input_tokens=int(tokens),
        output_tokens=int(tokens) // 4,
        latency_ms=2.0 * tokens,
        finish_reason="stop",
        response_model="gpt-4o",
    )
    e.update(fields)
    return e


def settings(metrics: list[str] | None = None, hold_s: float = 300.0, **workflows: Any) -> Settings:
    return Settings(
        detectors=DetectorSettings(warmup_events=200, window_events=100, enabled_metrics=metrics),
        alerts=AlertSettings(hold_down_s=hold_s),
        workflows=workflows,
    )


def small_settings(hold_s: float = 60.0, **detectors: Any) -> Settings:
    """A 50-event warm-up, 20-event windows and no settle time: a few calls arm a bundle."""
    base: dict[str, Any] = {"warmup_events": 50, "window_events": 20, "settle_s": 0}
    return Settings(
        detectors=DetectorSettings(**(base | detectors)),
        alerts=AlertSettings(hold_down_s=hold_s),
    )


def token_stream(seed: int, n: int, shift_at: int, shift_end: int, factor: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tokens = np.exp(rng.normal(np.log(400), 0.5, n))
    tokens[shift_at:shift_end] *= factor
    return tokens


def run(monitor: Monitor, events: list[dict], batch: int = 97) -> list[dict]:
    out: list[dict] = []
    for start in range(0, len(events), batch):
        out.extend(monitor.process(events[start : start + batch], []))
    return out


def of(transitions: list[dict], key_part: str) -> list[dict]:
    return [t for t in transitions if key_part in t["dedup_key"]]


def test_drift_opens_once_updates_and_resolves_once_after_hold_down() -> None:
    tokens = token_stream(0, 3000, 1000, 1600, 2.0)
    events = [event(i, T0 + i * S, t) for i, t in enumerate(tokens)]
    out = run(Monitor(settings(["input_tokens"])), events)
    drift = of(out, "drift/chat/input_tokens/b1")
    kinds = [t["transition"] for t in drift]
    assert kinds[0] == "open" and kinds[-1] == "resolve"
    assert kinds.count("open") == 1 and kinds.count("resolve") == 1
    opened, resolved = drift[0], drift[-1]
    assert T0 + 1000 * S <= opened["event_ts"] < T0 + 1040 * S  # x2: found within 40 events
    assert opened["current_value"] > opened["baseline_value"]
    # x2 is about 1.4 reference sd of log tokens: an error by the time the level has moved.
    assert resolved["severity"] == "error"
    assert resolved["alert_id"] == opened["alert_id"]
    assert resolved["evidence"]["resolution"] == "recovered"
    # Resolved once the metric has been back for the hold-down (300 s of event time): the
    # shift ends at 1600 and the detector's recovery test clears within a few windows (100).
    assert resolved["resolved_at"] == resolved["event_ts"]
    assert T0 + 1900 * S <= resolved["resolved_at"] <= T0 + 2400 * S
    assert [t["event_ts"] for t in out] == sorted(t["event_ts"] for t in out)


def test_alert_record_carries_design_fields_and_links() -> None:
    tokens = token_stream(0, 1300, 1000, 1300, 2.0)
    out = run(
        Monitor(settings(["input_tokens"])), [event(i, T0 + i * S, t) for i, t in enumerate(tokens)]
    )
    record = out[0]
    assert set(TRANSITION_FIELD_NAMES) <= set(record)
    assert record["runbook_url"] == "https://runbooks.example.com/driftline/drift/input_tokens"
    assert record["dashboard_url"].startswith(
        "http://localhost:3000/d/driftline-drift?var-workflow=chat&from="
    )
    ev = record["evidence"]
    assert ev["window_start"] < ev["window_end"] == record["event_ts"]
    assert ev["reference_events"] == 200 and ev["window_events"] == 100
    # 800 calls in control after the warm-up: the reference grew (a window behind).
    assert 200 < ev["reference_size"] <= 1000
    assert ev["test"] in {"cusum", "ks", "ewma"} and ev["threshold"] == record["threshold"]


def test_drift_page_names_the_bundle_a_responder_must_look_at() -> None:
    """The versions and service of the drifting bundle reach the PagerDuty event."""
    from driftline.streams.notifier.payload import trigger_event

    tokens = token_stream(0, 1300, 1000, 1300, 2.0)
    versions = {
        "service": "support-api",
        "prompt_version": "p-42",
        "retrieval_index_version": "idx-2026-11",
        "model_version": "2024-07-18",
    }
    events = [event(i, T0 + i * S, t, **versions) for i, t in enumerate(tokens)]
    opened = run(Monitor(settings(["input_tokens"])), events)[0]
    ev = opened["evidence"]
    assert (ev["model"], ev["prompt_version"], ev["retrieval_index_version"]) == (
        "gpt-4o",
        "p-42",
        "idx-2026-11",
    )
    payload = trigger_event(opened)["payload"]
    assert payload["group"] == "support-api" and payload["component"] == "chat"
    details = payload["custom_details"]["evidence"]
    assert details["model_version"] == "2024-07-18"
    assert (details["reference_events"], details["window_events"]) == (200, 100)


def test_stationary_traffic_raises_no_drift_alert() -> None:
    tokens = token_stream(5, 6000, 6000, 6000, 1.0)
    out = run(Monitor(settings()), [event(i, T0 + i * S, t) for i, t in enumerate(tokens)])
    assert out == []


def test_budget_hovering_at_threshold_does_not_flap() -> None:
    cfg = settings(["input_tokens"], chat={"budgets": {"max_tokens_per_request": 5000}})
    monitor = Monitor(cfg)
    # input + output tokens alternate just above and below the 5,000 ceiling every 10 s.
    events = [event(i, T0 + i * 10 * S, 4010 if i % 2 else 3990) for i in range(200)]
    events += [event(200 + i, T0 + (2000 + i * 10) * S, 3000) for i in range(100)]
    out = of(run(monitor, events), "budget/chat/tokens_per_request")
    assert [t["transition"] for t in out] == ["open", "resolve"]
    assert out[1]["event_ts"] == T0 + 1990 * S + 300 * S  # last breach + hold-down


def test_snapshot_restore_continues_identically() -> None:
    cfg = settings(["input_tokens", "latency"], chat={"budgets": {"max_tokens_per_request": 4000}})
    tokens = token_stream(3, 2400, 1200, 1800, 1.6)
    events = [event(i, T0 + i * S, t) for i, t in enumerate(tokens)]
    whole = run(Monitor(cfg), events, batch=100)

    first = Monitor(cfg)
    before = run(first, events[:1300], batch=100)
    snapshots = {wf: first.snapshot(wf) for wf in first.dirty_workflows()}
    second = Monitor(cfg)
    for wf, blob in snapshots.items():
        second.restore(wf, blob)
    after = run(second, events[1300:], batch=100)
    assert before + after == whole
    assert any(t["transition"] == "open" for t in before)  # an alert was open across the restart
    assert len(of(whole, "drift/chat/input_tokens")) >= 2


def test_routing_shadow_model_and_ghost_bundle() -> None:
    cfg = settings(
        ["input_tokens"], chat={"allowed_models": ["gpt-4o"], "registered_bundles": ["b1"]}
    )
    events = [
        event(0, T0, 400),
        event(1, T0 + S, 400, response_model="gpt-4o-mini"),
        event(2, T0 + 2 * S, 400, bundle_id="b9"),
    ]
    out = Monitor(cfg).process(events, [])
    opened = {(t["metric"], t["evidence"]["bundle_id"], t["severity"]) for t in out}
    assert opened == {("unallowed_model", "b1", "critical"), ("unregistered_bundle", "b9", "error")}
    assert {t["evidence"]["offenders"][0] for t in out} == {"gpt-4o-mini", "b9"}
    assert out[0]["evidence"]["model"] == "gpt-4o-mini"


def test_burn_rate_alert_on_monthly_cost() -> None:
    cfg = settings(["input_tokens"], chat={"budgets": {"monthly_cost_usd": 720.0}})
    events = [event(i, T0 + i * 60 * S, 400, cost_usd=0.5) for i in range(61)]
    out = of(run(Monitor(cfg), events), "cost_burn_rate")
    assert out[0]["transition"] == "open" and out[0]["severity"] == "critical"
    assert out[0]["evidence"]["short_window_s"] == 300.0


def test_tenant_window_budget_and_trace_limits() -> None:
    cfg = settings(
        ["input_tokens"],
        chat={
            "budgets": {"max_loop_depth": 3, "max_amplification": 5.0},
            "tenants": {"acme": {"tokens_per_window": 3000, "window_s": 600}},
        },
    )
    events = [event(i, T0 + i * S, 400, tenant="acme") for i in range(10)]
    trace = from_wire({}, TRACE_FIELDS) | {
        "trace_id": "t1",
        "workflow": "chat",
        "end_ts": T0 + 20 * S,
        "max_loop_depth": 7,
        "amplification": 9.0,
    }
    out = Monitor(cfg).process(events, [trace])
    metrics = {t["metric"] for t in out if t["transition"] == "open"}
    assert metrics == {"tokens_per_window[tenant=acme]", "loop_depth", "amplification"}


def test_canary_compares_two_bundles_serving_at_once() -> None:
    rng = np.random.default_rng(9)
    events = []
    for i in range(600):
        b1 = float(np.exp(rng.normal(np.log(400), 0.5)))
        b2 = float(np.exp(rng.normal(np.log(400 * 1.8), 0.5)))
        events.append(event(2 * i, T0 + i * S, b1))
        events.append(event(2 * i + 1, T0 + i * S + 1, b2, bundle_id="b2"))
    out = run(Monitor(settings(["input_tokens"])), events)
    canary = of(out, "drift/chat/input_tokens:canary/b2")
    assert canary and canary[0]["evidence"]["baseline_bundle_id"] == "b1"
    # Before b2 even has its own baseline (its first detectors.settle_s are not a reference).
    assert canary[0]["event_ts"] < T0 + (SETTLE_S_DEFAULT + 200) * S


def test_a_canary_alert_holds_while_a_window_refills() -> None:
    # A bundle's KS window starts over after a shape detection or a decided recovery; the
    # canary has nothing to compare until it is full again, which is no evidence that the
    # candidate came back: its alert stays open (it resolved once the refill outlasted
    # the hold-down).
    rng = np.random.default_rng(9)

    def pairs(first: int, n: int, gap_s: int) -> list[dict[str, Any]]:
        out = []
        for i in range(first, first + n):
            ts = T0 + (first + (i - first) * gap_s) * S
            b1 = float(np.exp(rng.normal(np.log(400), 0.5)))
            b2 = float(np.exp(rng.normal(np.log(400 * 1.8), 0.5)))
            out.append(event(2 * i, ts, b1))
            out.append(event(2 * i + 1, ts + 1, b2, bundle_id="b2"))
        return out

    monitor = Monitor(settings(["input_tokens"]))
    opened = of(run(monitor, pairs(0, 600, 1)), "drift/chat/input_tokens:canary/")
    assert [t["transition"] for t in opened] == ["open", "open"]  # either way round
    for bundle in ("b1", "b2"):
        ks = monitor._states["chat"].bundles[bundle].detectors["input_tokens"]._ks
        assert ks is not None
        ks.restart()  # as a decided recovery on the bundle's own drift test does
    # Refilling the windows takes twice the hold-down and more at a pair every 8 s.
    window = monitor._states["chat"].bundles["b1"].detectors["input_tokens"].window
    assert window * 8 > 2 * 300  # settings(): hold_down_s 300
    during = of(run(monitor, pairs(600, window - 10, 8)), "drift/chat/input_tokens:canary/")
    assert [t["transition"] for t in during if t["transition"] != "update"] == []


def test_dirty_workflows_and_bad_snapshots() -> None:
    monitor = Monitor(settings(["input_tokens"]))
    monitor.process([event(0, T0, 400), event(1, T0, 400, workflow="other")], [])
    assert monitor.dirty_workflows() == {"chat", "other"}
    assert monitor.dirty_workflows() == set()
    assert monitor.workflows() == ["chat", "other"]
    with pytest.raises(SnapshotError, match="delete it"):
        monitor.restore("chat", b"not a snapshot")


def test_unknown_metric_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="enabled_metrics"):
        Monitor(settings(["tokens_in"]))


def test_routing_accepts_a_dated_response_to_an_allowed_request_model() -> None:
    dated = event(1, T0, 400, request_model="gpt-4o-mini", response_model="gpt-4o-mini-2024-07-18")
    shadow = event(2, T0 + S, 400, request_model="gpt-4-turbo", response_model="gpt-4-turbo-2024")
    monitor = Monitor(settings(["input_tokens"], chat={"allowed_models": ["gpt-4o-mini"]}))
    routing = of(monitor.process([dated, shadow], []), "routing/chat/unallowed_model")
    assert [r["evidence"]["span_id"] for r in routing] == ["s2"]
    assert routing[0]["evidence"]["request_model"] == "gpt-4-turbo"


def test_canary_compares_only_bundles_of_one_slot() -> None:
    rng = np.random.default_rng(4)
    events = []
    for i in range(800):
        mini = float(np.exp(rng.normal(np.log(400), 0.5)))
        embed = float(np.exp(rng.normal(np.log(40), 0.5)))  # a different call, not a rollout
        events.append(event(2 * i, T0 + i * S, mini, operation="chat"))
        events.append(
            event(
                2 * i + 1,
                T0 + i * S + 1,
                embed,
                bundle_id="emb",
                operation="embeddings",
                response_model="text-embedding-3-small",
            )
        )
    out = run(Monitor(settings(["input_tokens"])), events)
    assert [t for t in out if ":canary" in t["dedup_key"]] == []
