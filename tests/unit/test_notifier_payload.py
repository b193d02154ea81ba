"""Pure parts of alert delivery: summaries, PagerDuty bodies, limits, webhooks, routing."""

from __future__ import annotations

import json
import math
import random
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.config import PagerDutyRoute, PagerDutySettings
from driftline.streams.notifier import payload
from driftline.streams.notifier.ledger import DeliveryLedger, skip_reason
from driftline.streams.notifier.ratelimit import TokenBucket
from driftline.streams.notifier.retry import RetryPolicy
from driftline.streams.notifier.routing import (
    ENV_EVENTS_URL,
    ENV_ROUTING_KEY,
    MissingSecretError,
    Route,
    Router,
    Secret,
)
from driftline.streams.notifier.webhook import alertmanager_body, slack_body

KEY = "dl0test0routing0key0000000000042"
OPENED = 1_790_000_000_000_000  # microseconds
MIN = 60_000_000


def make_alert(**overrides: Any) -> dict[str, Any]:
    alert: dict[str, Any] = {
        "alert_id": "a-0001",
        "dedup_key": "drift:support-bot:output_tokens:3f2a9c0e11",
        "kind": "drift",
        "severity": "error",
        "state": "open",
        "opened_at": OPENED,
        "resolved_at": None,
        "workflow": "support-bot",
        "metric": "output_tokens",
        "baseline_value": 400.0,
        "current_value": 552.0,
        "score": 9.5,
        "threshold": 5.0,
        "bundle_id": "3f2a9c0e11",
        "evidence": {
            "test": "cusum",
            "window_start": OPENED - 10 * MIN,
            "window_end": OPENED + 4 * MIN,
            "reference_events": 500,
            "window_events": 212,
            "model": "gpt-4o-mini",
            "prompt_version": "p-17",
            "retrieval_index_version": "idx-2026-11",
        },
        "runbook_url": "https://runbooks.example.com/driftline/drift#output_tokens",
        "dashboard_url": "http://grafana.local:3000/d/driftline-workflow/workflow?orgId=1",
        "transition": "update",
        "event_ts": OPENED + 4 * MIN,
    }
    alert.update(overrides)
    return alert


# -- summary ------------------------------------------------------------------------------


def test_drift_summary_reads_like_the_page_an_engineer_needs() -> None:
    assert payload.summary(make_alert()) == (
        "support-bot: output tokens/request +38% vs baseline (bundle 3f2a..), "
        "CUSUM over threshold for 4 min"
    )


def test_summary_without_duration_on_open_and_with_shape_tests() -> None:
    opened = make_alert(transition="open", event_ts=OPENED, current_value=300.0)
    assert payload.summary(opened) == (
        "support-bot: output tokens/request -25% vs baseline (bundle 3f2a..), CUSUM over threshold"
    )
    js = make_alert(
        metric="finish_reason",
        baseline_value=0.0,
        current_value=0.083,
        evidence={"test": "g_test", "score_units": "jensen_shannon"},
    )
    assert payload.summary(js) == (
        "support-bot: finish-reason mix shifted vs baseline (bundle 3f2a..) (JS divergence 0.083),"
        " G-test over threshold for 4 min"
    )
    categorical = make_alert(
        metric="finish_reason",
        baseline_value=None,
        current_value=None,
        score=0.31,
        threshold=0.2,
        evidence={"test": "psi"},
        event_ts=OPENED + 75 * MIN,
    )
    assert payload.summary(categorical) == (
        "support-bot: finish-reason mix shifted vs baseline (bundle 3f2a..) (score 0.31 > 0.2), "
        "PSI over threshold for 1 h 15 min"
    )


def test_budget_and_routing_summaries() -> None:
    budget = make_alert(
        kind="budget",
        metric="cost_usd",
        current_value=12.4,
        threshold=10.0,
        baseline_value=None,
        transition="open",
        event_ts=OPENED,
    )
    assert payload.summary(budget) == (
        "support-bot: cost/request 12.4 over budget 10 (124% of budget) (bundle 3f2a..)"
    )
    routing = make_alert(
        kind="routing",
        metric="unallowed_model",
        severity="critical",
        evidence={"model": "gpt-5-preview"},
        transition="open",
        event_ts=OPENED,
    )
    assert payload.summary(routing) == (
        "support-bot: model gpt-5-preview is not in the allowed list (shadow routing)"
    )
    flood = make_alert(
        kind="routing",
        metric="unallowed_model",
        severity="critical",
        bundle_id="",
        evidence={
            "model": "m7",
            "offenders": [f"m{i}" for i in range(20)],
            "offenders_truncated": True,
        },
        transition="update",
        event_ts=OPENED,
    )
    assert payload.summary(flood) == (
        "support-bot: 20 models not in the allowed list (shadow routing) (m0, m1, m2, m3, m4, ...)"
    )
    capacity = make_alert(
        kind="budget",
        metric="tracked_workflows",
        severity="warning",
        workflow="*",
        bundle_id="",
        threshold=2000.0,
        current_value=2001.0,
        evidence={"offenders": ["new-a", "new-b"]},
        event_ts=OPENED,
    )
    assert payload.summary(capacity) == (
        "monitor at its cap of 2000 tracked workflows: new workflows not monitored"
        " (new-a, new-b); raise detectors.max_workflows or add workers"
    )
    over_cap = make_alert(
        kind="budget",
        metric="open_alerts",
        severity="critical",
        bundle_id="",
        threshold=20.0,
        evidence={"offenders": [f"drift/support-bot/m{i}/b" for i in range(4)]},
        event_ts=OPENED,
    )
    assert payload.summary(over_cap) == (
        "support-bot: 4 alerts not opened, at the cap of 20 open per kind"
        " (drift/support-bot/m0/b, drift/support-bot/m1/b, drift/support-bot/m2/b, ...)"
    )
    grouped_ghost = make_alert(
        kind="routing",
        metric="unregistered_bundle",
        bundle_id="",
        evidence={"bundle_id": "3f2a9c0e11", "model": "gpt-4o", "offenders": ["3f2a9c0e11"]},
        event_ts=OPENED,
    )
    assert payload.summary(grouped_ghost) == (
        "support-bot: bundle 3f2a9c0e is not registered (model gpt-4o)"
    )
    ghost = make_alert(
        kind="routing",
        metric="unregistered_bundle",
        transition="open",
        evidence={"model": "gpt-4o", "prompt_version": "p-18"},
        event_ts=OPENED,
    )
    assert payload.summary(ghost) == (
        "support-bot: bundle 3f2a9c0e is not registered (model gpt-4o, prompt p-18)"
    )
    version = make_alert(
        kind="routing",
        metric="unregistered_model_version",
        evidence={"model": "llama-3", "model_version": "v9"},
        event_ts=OPENED,
    )
    assert payload.summary(version) == (
        "support-bot: model version v9 of llama-3 is not registered"
    )
    burn = make_alert(
        kind="budget",
        metric="cost_burn_rate[tenant=acme]",
        current_value=16.2,
        threshold=14.4,
        bundle_id="",
        event_ts=OPENED + 5 * MIN,
    )
    assert payload.summary(burn) == (
        "support-bot: cost burn rate [tenant=acme] 16.2 over threshold 14.4 (112% of threshold)"
        " for 5 min"
    )


def test_summary_is_cut_to_1024_chars() -> None:
    text = payload.summary(make_alert(workflow="w" * 5000))
    assert len(text) == payload.MAX_SUMMARY_CHARS and text.endswith("...")


# -- PagerDuty bodies ---------------------------------------------------------------------


def test_trigger_event_fields() -> None:
    event = payload.trigger_event(
        make_alert(evidence={**make_alert()["evidence"], "service": "support-api"})
    )
    assert set(event) == {"event_action", "dedup_key", "payload", "client", "client_url", "links"}
    assert event["event_action"] == "trigger"
    assert event["dedup_key"] == "drift:support-bot:output_tokens:3f2a9c0e11"
    body = event["payload"]
    assert body["summary"].startswith("support-bot: output tokens/request +38%")
    assert body["source"] == "support-api"
    assert body["severity"] == "error"
    assert body["component"] == "support-bot"
    assert body["group"] == "support-api"
    assert body["class"] == "drift"
    assert body["timestamp"] == "2026-09-21T14:17:20.000+00:00"
    details = body["custom_details"]
    assert details["baseline_value"] == 400.0 and details["current_value"] == 552.0
    assert details["change"] == "+38%"
    assert details["score"] == 9.5 and details["threshold"] == 5.0
    assert details["evidence"]["window_events"] == 212
    assert details["evidence"]["prompt_version"] == "p-17"
    assert details["opened_at"] == "2026-09-21T14:13:20.000+00:00"
    assert "routing_key" not in event


def test_links_set_time_range_and_workflow_variable() -> None:
    links = payload.links(make_alert())
    assert [link["text"] for link in links] == [
        "Grafana: support-bot output_tokens",
        "Runbook: drift alert",
    ]
    dashboard = urlsplit(links[0]["href"])
    query = parse_qs(dashboard.query)
    assert dashboard.netloc == "grafana.local:3000"
    assert query["orgId"] == ["1"]  # the alert's own parameters are kept
    assert query["var-workflow"] == ["support-bot"]
    # from: the evidence window start minus 15 min padding, in milliseconds
    assert query["from"] == [str((OPENED - 25 * MIN) // 1000)]
    assert query["to"] == ["now"]
    resolved = payload.dashboard_link(make_alert(resolved_at=OPENED + 30 * MIN))
    assert parse_qs(urlsplit(str(resolved)).query)["to"] == [str((OPENED + 45 * MIN) // 1000)]
    assert links[1]["href"] == "https://runbooks.example.com/driftline/drift#output_tokens"


def test_resolve_event_is_minimal() -> None:
    assert payload.resolve_event(make_alert(transition="resolve")) == {
        "event_action": "resolve",
        "dedup_key": "drift:support-bot:output_tokens:3f2a9c0e11",
    }


def test_long_dedup_key_is_shortened_stably() -> None:
    long_key = "drift:" + "x" * 400
    short = payload.pagerduty_dedup_key(long_key)
    assert len(short) == 255
    assert short == payload.pagerduty_dedup_key(long_key)
    assert short != payload.pagerduty_dedup_key(long_key + "y")


def test_unknown_severity_pages_as_error() -> None:
    assert payload.pagerduty_severity("sev1") == "error"
    assert payload.pagerduty_severity("warning") == "warning"


def test_huge_evidence_is_trimmed_under_512_kb() -> None:
    alert = make_alert(evidence={"test": "ks", "samples": "9" * 800_000, "note": "n" * 10})
    body = payload.encode_body(payload.trigger_event(alert), KEY)
    assert len(body) <= payload.MAX_BODY_BYTES
    details = json.loads(body)["payload"]["custom_details"]
    assert len(details["evidence"]["samples"]) == payload.MAX_EVIDENCE_STRING_CHARS
    many = make_alert(evidence={f"k{i}": "v" * 900 for i in range(1000)})
    body = payload.encode_body(payload.trigger_event(many), KEY)
    assert len(body) <= payload.MAX_BODY_BYTES
    assert "truncated" in json.loads(body)["payload"]["custom_details"]["evidence"]


@settings(max_examples=40, deadline=None)
@given(
    workflow=st.text(min_size=1, max_size=2000),
    dedup=st.text(min_size=1, max_size=600),
    evidence=st.dictionaries(st.text(max_size=20), st.text(max_size=30_000), max_size=30),
)
def test_every_trigger_respects_the_api_limits(
    workflow: str, dedup: str, evidence: dict[str, str]
) -> None:
    event = payload.trigger_event(make_alert(workflow=workflow, dedup_key=dedup, evidence=evidence))
    assert len(payload.encode_body(event, KEY)) <= payload.MAX_BODY_BYTES
    assert len(event["dedup_key"]) <= 255
    assert 0 < len(event["payload"]["summary"]) <= 1024


def test_routing_key_enters_only_the_encoded_body() -> None:
    event = payload.trigger_event(make_alert())
    assert KEY not in json.dumps(event)
    assert json.loads(payload.encode_body(event, KEY))["routing_key"] == KEY


# -- webhooks -----------------------------------------------------------------------------


def test_slack_body_for_trigger_and_resolve() -> None:
    text = slack_body(make_alert())["text"]
    first, links, key = text.split("\n")
    assert first == (
        ":rotating_light: *ERROR* support-bot: output tokens/request +38% vs baseline "
        "(bundle 3f2a..), CUSUM over threshold for 4 min"
    )
    assert links.startswith("<http://grafana.local:3000/d/driftline-workflow/workflow?orgId=1&")
    assert links.endswith(
        "|dashboard> | <https://runbooks.example.com/driftline/drift#output_tokens|runbook>"
    )
    assert key == "dedup_key `drift:support-bot:output_tokens:3f2a9c0e11`"
    resolved = slack_body(
        make_alert(transition="resolve", state="resolved", resolved_at=OPENED + 42 * MIN)
    )["text"]
    assert resolved.startswith(":white_check_mark: *RESOLVED after 42 min* support-bot:")
    accepted = slack_body(
        make_alert(
            transition="resolve",
            state="resolved",
            resolved_at=OPENED + 42 * MIN,
            evidence={"resolution": "accepted"},
        )
    )["text"]
    assert accepted.startswith(
        ":white_check_mark: *RESOLVED after 42 min* (accepted as the new baseline) support-bot:"
    )


def test_alertmanager_body_shape() -> None:
    body = alertmanager_body(make_alert(), receiver="webhook[1]")
    assert body["version"] == "4" and body["status"] == "firing"
    assert body["receiver"] == "webhook[1]"
    assert body["groupKey"] == "drift:support-bot:output_tokens:3f2a9c0e11"
    (alert,) = body["alerts"]
    assert alert["labels"] == {
        "alertname": "driftline_drift",
        "workflow": "support-bot",
        "metric": "output_tokens",
        "severity": "error",
        "kind": "drift",
        "bundle_id": "3f2a9c0e11",
        "dedup_key": "drift:support-bot:output_tokens:3f2a9c0e11",
    }
    assert alert["startsAt"] == "2026-09-21T14:13:20.000+00:00"
    assert alert["endsAt"] == "0001-01-01T00:00:00Z"
    assert alert["annotations"]["summary"] == payload.summary(make_alert())
    assert alert["generatorURL"].startswith("http://grafana.local:3000/d/driftline-workflow/")
    resolved = alertmanager_body(
        make_alert(transition="resolve", state="resolved", resolved_at=OPENED + MIN), "w"
    )
    assert resolved["status"] == "resolved"
    assert resolved["alerts"][0]["endsAt"] == "2026-09-21T14:14:20.000+00:00"


# -- routing ------------------------------------------------------------------------------


def test_zero_config_uses_environment() -> None:
    env = {ENV_ROUTING_KEY: KEY, ENV_EVENTS_URL: "http://127.0.0.1:9/v2/enqueue"}
    router = Router.from_settings(PagerDutySettings.model_validate({}), env)
    (route,) = router.match(make_alert(severity="info"))
    destination = router.destination(route)
    assert destination.url == "http://127.0.0.1:9/v2/enqueue"
    assert destination.routing_key == Secret(KEY)
    assert destination.target == "default@127.0.0.1"
    public = Router.from_settings(PagerDutySettings.model_validate({}), {ENV_ROUTING_KEY: KEY})
    assert public.destination(public.routes[0]).url == "https://events.pagerduty.com/v2/enqueue"


def test_missing_routing_key_names_the_variable() -> None:
    router = Router.from_settings(PagerDutySettings.model_validate({}), {})
    with pytest.raises(MissingSecretError, match="PAGERDUTY_ROUTING_KEY is not set"):
        router.destination(router.routes[0])


def test_routes_fan_out_by_workflow_glob_and_severity() -> None:
    settings_ = PagerDutySettings(
        events_url="http://pd.local/v2/enqueue",
        max_events_per_minute=120,
        routes=[
            PagerDutyRoute(workflow="support-*", min_severity="critical", routing_key_env="PD_SUP"),
            PagerDutyRoute(
                workflow="*",
                min_severity="info",
                kind="webhook",
                routing_key_env="CHAT_HOOK",
                webhook_format="alertmanager",
            ),
        ],
    )
    env = {"PD_SUP": KEY, "CHAT_HOOK": "https://hooks.local/T/B/s3cr3t"}
    router = Router.from_settings(settings_, env)
    names = [r.name for r in router.match(make_alert(severity="critical"))]
    assert names == ["pagerduty[0]", "webhook[1]"]
    assert [r.name for r in router.match(make_alert(severity="error"))] == ["webhook[1]"]
    assert [r.name for r in router.match(make_alert(workflow="billing", severity="critical"))] == [
        "webhook[1]"
    ]
    hook = router.destination(router.routes[1])
    assert hook.url_is_secret and hook.target == "webhook[1]@hooks.local"
    assert "/T/B/s3cr3t" in hook.secrets()


def test_secrets_never_print() -> None:
    secret = Secret(KEY)
    router = Router((Route("default"),), environ={ENV_ROUTING_KEY: KEY})
    destination = router.destination(router.routes[0])
    for text in (repr(secret), str(secret), f"{secret}", repr(router), repr(destination)):
        assert KEY not in text


# -- ledger, rate limit, backoff ----------------------------------------------------------


def test_skip_rules_after_restart() -> None:
    delivered = {
        "alert_id": "a-0001",
        "event_action": "trigger",
        "severity": "error",
        "current_value": 552.0,
        "score": 9.5,
    }
    assert skip_reason(None, make_alert(transition="open"), "trigger", 0.05) is None
    assert "already delivered" in str(
        skip_reason(delivered, make_alert(transition="open"), "trigger", 0.05)
    )
    assert "not a material change" in str(
        skip_reason(delivered, make_alert(current_value=560.0), "trigger", 0.05)
    )
    assert skip_reason(delivered, make_alert(current_value=700.0), "trigger", 0.05) is None
    assert (
        skip_reason(
            delivered, make_alert(severity="critical", current_value=552.0), "trigger", 0.05
        )
        is None
    )
    assert skip_reason(delivered, make_alert(transition="resolve"), "resolve", 0.05) is None
    resolved = {**delivered, "event_action": "resolve"}
    assert "already resolved" in str(
        skip_reason(resolved, make_alert(transition="open"), "trigger", 0.05)
    )
    assert (
        skip_reason(resolved, make_alert(alert_id="a-0002", transition="open"), "trigger", 0.05)
        is None
    )


def test_ledger_export_load_changes_and_prune() -> None:
    ledger = DeliveryLedger()
    ledger.record("r1", make_alert(), "trigger", 10)
    ledger.record("r1", make_alert(dedup_key="k2", transition="resolve"), "resolve", 20)
    state = ledger.export()
    assert set(ledger.pop_changes()) == set(state) and ledger.pop_changes() == {}
    restored = DeliveryLedger()
    restored.load(json.loads(json.dumps(state)))  # survives a JSON changelog
    assert restored.get("r1", "k2") == state["r1:k2"]
    assert restored.prune(delivered_before=15) == []
    assert restored.prune(delivered_before=25) == ["r1:k2"]
    assert len(restored) == 1


def test_token_bucket_paces_at_the_configured_rate() -> None:
    bucket = TokenBucket(rate_per_s=2.0, capacity=3, now=0.0)
    for _ in range(3):
        bucket.take(0.0)
    assert bucket.wait_time(0.0) == pytest.approx(0.5)
    assert bucket.wait_time(0.5) == 0.0
    bucket.empty(0.5)
    assert bucket.wait_time(0.5) == pytest.approx(0.5)
    with pytest.raises(RuntimeError, match="wait_time"):
        bucket.take(0.6)


def test_backoff_is_full_jitter_under_a_capped_exponential() -> None:
    policy = RetryPolicy(base_s=1.0, cap_s=60.0)
    rng = random.Random(3)
    delays = [[policy.delay(n, rng) for _ in range(200)] for n in (1, 4, 12)]
    assert all(0 <= d <= 1 for d in delays[0]) and all(0 <= d <= 8 for d in delays[1])
    assert all(0 <= d <= 60 for d in delays[2]) and max(delays[2]) > 50
    with pytest.raises(ValueError, match="base_s"):
        RetryPolicy(base_s=0)


def _strict(body: bytes) -> Any:
    def refuse(constant: str) -> Any:
        raise AssertionError(f"{constant} is not JSON")

    return json.loads(body, parse_constant=refuse)


@pytest.mark.parametrize("kind", ["drift", "budget", "routing", "trace", "engine"])
@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_every_body_is_strict_json_whatever_the_numbers(kind: str, bad: float) -> None:
    alert = make_alert(
        kind=kind,
        metric="cost_burn_rate" if kind == "budget" else "output_tokens",
        baseline_value=bad,
        current_value=bad,
        score=bad,
        threshold=bad,
        evidence={"burn_rate_1h": bad, "rates": [1.0, bad], "nested": {"cost_usd": bad}},
    )
    bodies = [
        payload.encode_body(payload.trigger_event(alert), "routing-key-0123456789abcdef0123"),
        payload.encode_body(slack_body(alert), None),
        payload.encode_body(alertmanager_body(alert, receiver="oncall"), None),
    ]
    for body in bodies:
        _strict(body)  # a strict receiver (PagerDuty answers 400) takes every one
    details = _strict(bodies[0])["payload"]["custom_details"]
    assert details["current_value"] is None
    assert details["evidence"]["nested"]["cost_usd"] is None
