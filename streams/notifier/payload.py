"""PagerDuty Events API v2 bodies built from alert transition records (pure functions).

A trigger carries what an on-call engineer needs at 2 a.m.: a one-line summary
with the size of the change, the bundle and how long it has lasted; the evidence
in ``custom_details``; links to the Grafana dashboard (time range and workflow
variable set) and to the runbook. A resolve carries only the dedup key.
Limits from the API: ``dedup_key`` <= 255 chars, ``summary`` <= 1024 chars,
whole body <= 512 KB.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MAX_DEDUP_KEY_CHARS: Final = 255
MAX_SUMMARY_CHARS: Final = 1024
MAX_BODY_BYTES: Final = 512 * 1024
# Room for the routing key and JSON punctuation added when the body is encoded.
BODY_MARGIN_BYTES: Final = 256
MAX_EVIDENCE_STRING_CHARS: Final = 1024
DASHBOARD_PADDING_US: Final = 15 * 60 * 1_000_000  # context before and after the alert

PAGERDUTY_SEVERITIES: Final = frozenset({"critical", "error", "warning", "info"})
CLIENT_NAME: Final = "driftline"

METRIC_LABELS: Final[dict[str, str]] = {
    "input_tokens": "input tokens/request",
    "output_tokens": "output tokens/request",
    "cache_read_tokens": "cache-read tokens/request",
    "reasoning_tokens": "reasoning tokens/request",
    "cost_usd": "cost/request",
    "latency_ms": "latency",
    "ttft_ms": "time to first token",
    "queue_ms": "queue time",
    "retry_attempt": "retries/request",
    "kv_cache_usage": "KV-cache usage",
    "output_chars": "output length",
    "finish_reason": "finish-reason mix",
    "validation_failed": "validation-failure rate",
    "loop_depth": "loop depth",
    "tool_calls": "tool calls/request",
    # budgets (streams/monitor.py)
    "tokens_per_request": "tokens/request",
    "retries_per_request": "retries/request",
    "tokens_per_window": "tokens per budget window",
    "cost_usd_per_window": "cost (USD) per budget window",
    "cost_burn_rate": "cost burn rate",
}

TEST_LABELS: Final[dict[str, str]] = {
    "cusum": "CUSUM",
    "page_hinkley": "Page-Hinkley",
    "ks": "KS test",
    "psi": "PSI",
    "chi2": "chi-square",
    "chi_square": "chi-square",
    "js": "Jensen-Shannon",
    "jensen_shannon": "Jensen-Shannon",
    "ewma": "EWMA",
    "burn_rate": "burn rate",
    "g_test": "G-test",
    "ks_canary": "canary KS test",
}


def pagerduty_severity(severity: object) -> str:
    """Alert severities are PagerDuty's own; anything else pages as ``error``."""
    text = str(severity)
    return text if text in PAGERDUTY_SEVERITIES else "error"


def pagerduty_dedup_key(dedup_key: str) -> str:
    """The alert's key, or for a key over 255 chars a stable prefix plus its hash."""
    if len(dedup_key) <= MAX_DEDUP_KEY_CHARS:
        return dedup_key
    digest = hashlib.sha256(dedup_key.encode()).hexdigest()[:16]
    return f"{dedup_key[: MAX_DEDUP_KEY_CHARS - 17]}~{digest}"


def iso_timestamp(ts_us: int) -> str:
    return datetime.fromtimestamp(ts_us / 1_000_000, tz=UTC).isoformat(timespec="milliseconds")


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def metric_label(metric: str) -> str:
    """Readable metric name; a scope (``[tenant=acme]``) or ``:canary`` suffix is kept.

    >>> metric_label("cost_usd_per_window[tenant=acme]"), metric_label("output_tokens:canary")
    ('cost (USD) per budget window [tenant=acme]', 'output tokens/request (canary)')
    """
    scope = ""
    if "[" in metric and metric.endswith("]"):
        metric, scope = metric.split("[", 1)
        scope = f" [{scope}"
    qualifier = ""
    if ":" in metric:
        metric, qualifier = metric.split(":", 1)
        qualifier = f" ({qualifier})"
    return METRIC_LABELS.get(metric, metric.replace("_", " ")) + qualifier + scope


OFFENDER_NOUNS: Final = {
    "unallowed_model": "models not in the allowed list (shadow routing)",
    "unregistered_bundle": "bundles not registered",
    "unregistered_model_version": "model versions not registered",
}


def _routing_summary(alert: Mapping[str, Any], workflow: str, metric: str) -> str:
    evidence = alert.get("evidence") or {}
    model = str(evidence.get("model") or "")
    version = str(evidence.get("model_version") or "")
    # A routing incident is per workflow: its bundle is the call's, in the evidence.
    bundle = str(alert.get("bundle_id") or evidence.get("bundle_id") or "")
    offenders = [str(o) for o in evidence.get("offenders") or ()]
    if len(offenders) > 1 and metric in OFFENDER_NOUNS:
        shown = [o[:8] if metric == "unregistered_bundle" else o for o in offenders[:5]]
        more = ", ..." if len(offenders) > 5 or evidence.get("offenders_truncated") else ""
        what = OFFENDER_NOUNS[metric]
        return f"{workflow}: {len(offenders)} {what} ({', '.join(shown)}{more})"
    if metric == "unallowed_model":
        return f"{workflow}: model {model or '?'} is not in the allowed list (shadow routing)"
    if metric == "unregistered_bundle":
        parts = [
            f"model {model}" if model else "",
            f"prompt {evidence.get('prompt_version')}" if evidence.get("prompt_version") else "",
        ]
        known = ", ".join(p for p in parts if p)
        return f"{workflow}: bundle {bundle[:8] or '?'} is not registered" + (
            f" ({known})" if known else ""
        )
    if metric == "unregistered_model_version":
        return f"{workflow}: model version {version or '?'} of {model or '?'} is not registered"
    offender = model or version or bundle[:8]
    text = f"{workflow}: {metric_label(metric)} violation"
    return text + (f": {offender}" if offender else "")


def test_label(evidence: Mapping[str, Any]) -> str:
    test = str(evidence.get("test") or evidence.get("detector") or "")
    return TEST_LABELS.get(test.lower(), test.upper() if len(test) <= 4 else test)


test_label.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


def format_duration(seconds: float) -> str:
    """Whole minutes, with hours past the first hour.

    >>> format_duration(250), format_duration(7500)
    ('4 min', '2 h 5 min')
    """
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"


def change_text(baseline: float | None, current: float | None) -> str:
    """``+38%`` when a relative change makes sense, else ``12.3 (baseline 4.1)``."""
    if current is None:
        return "changed"
    if baseline is None:
        return _fmt(current)
    if baseline == 0:
        return f"{_fmt(current)} (baseline 0)"
    return f"{(current - baseline) / abs(baseline) * 100:+.0f}%"


def _ongoing_seconds(alert: Mapping[str, Any]) -> float:
    opened = alert.get("opened_at")
    now = alert.get("resolved_at") or alert.get("event_ts")
    if isinstance(opened, int) and isinstance(now, int):
        return max(0.0, (now - opened) / 1_000_000)
    return 0.0


def _bundle_text(alert: Mapping[str, Any]) -> str:
    bundle = str(alert.get("bundle_id") or "")
    return f" (bundle {bundle[:4]}..)" if bundle else ""


def summary(alert: Mapping[str, Any]) -> str:
    """One line an on-call engineer can act on.

    >>> print(summary({"workflow": "bot", "kind": "drift", "metric": "output_tokens",
    ...          "baseline_value": 400.0, "current_value": 552.0, "bundle_id": "3f2a9c0e",
    ...          "evidence": {"test": "cusum"}, "opened_at": 0, "event_ts": 240_000_000}))
    bot: output tokens/request +38% vs baseline (bundle 3f2a..), CUSUM over threshold for 4 min
    >>> print(summary({"kind": "pipeline", "metric": "store_failing", "opened_at": 0,
    ...     "event_ts": 0, "evidence": {"worker": "w1", "description": "store failing"}}))
    driftline worker w1: store failing
    >>> print(summary({"kind": "engine", "metric": "kv_cache_saturated", "opened_at": 0,
    ...     "event_ts": 180_000_000, "evidence": {"description": "KV cache 97% full on vllm-0"}}))
    engine: KV cache 97% full on vllm-0 for 3 min
    """
    workflow = str(alert.get("workflow") or "unknown workflow")
    kind = str(alert.get("kind") or "")
    metric = str(alert.get("metric") or "")
    label = metric_label(metric)
    evidence = alert.get("evidence") or {}
    baseline = _number(alert.get("baseline_value"))
    current = _number(alert.get("current_value"))
    score = _number(alert.get("score"))
    threshold = _number(alert.get("threshold"))
    ongoing = _ongoing_seconds(alert)
    lasting = f" for {format_duration(ongoing)}" if ongoing >= 60 else ""
    bundle = _bundle_text(alert)

    if kind == "pipeline":
        # About driftline itself (streams/selfalerts.py): the worker and what it measured.
        worker = str(evidence.get("worker") or "?")
        described = str(evidence.get("description") or label)
        text = f"driftline worker {worker}: {described}{lasting}"
    elif kind == "engine":
        # A serving engine's condition (streams/monitor/engine_conditions.py), not a workflow's.
        text = f"engine: {evidence.get('description') or label}{lasting}"
    elif kind == "budget" and metric == "tracked_workflows":
        names = ", ".join(str(o) for o in evidence.get("offenders") or ())
        text = (
            f"monitor at its cap of {_fmt(threshold or 0.0)} tracked workflows: new workflows"
            f" not monitored ({names}); raise detectors.max_workflows or add workers"
        )
    elif kind == "budget" and metric == "open_alerts":
        listed = [str(o) for o in evidence.get("offenders") or ()]
        truncated = bool(evidence.get("offenders_truncated"))
        more = ", ..." if len(listed) > 3 or truncated else ""
        text = (
            f"{workflow}: {len(listed)}{'+' if truncated else ''} alerts not opened, at the cap"
            f" of {_fmt(threshold or 0.0)} open per kind ({', '.join(listed[:3])}{more})"
        )
    elif kind == "budget":
        text = f"{workflow}: {label} {_fmt(current) if current is not None else '?'} over"
        limit = "threshold" if metric.startswith("cost_burn_rate") else "budget"
        text += f" {limit}"
        if threshold is not None:
            text += f" {_fmt(threshold)}"
            if current is not None and threshold > 0:
                text += f" ({current / threshold * 100:.0f}% of {limit})"
        text += f"{bundle}{lasting}"
    elif kind == "routing":
        text = _routing_summary(alert, workflow, metric) + lasting
    else:
        test = test_label(evidence)
        categorical = evidence.get("score_units") == "jensen_shannon"
        if categorical and current is not None:
            text = f"{workflow}: {label} shifted vs baseline{bundle} (JS divergence {current:.2g})"
        elif baseline is not None and current is not None:
            text = f"{workflow}: {label} {change_text(baseline, current)} vs baseline{bundle}"
        else:
            text = f"{workflow}: {label} shifted vs baseline{bundle}"
            if score is not None and threshold is not None:
                text += f" (score {_fmt(score)} > {_fmt(threshold)})"
        text += f", {test or 'detector'} over threshold{lasting}"
    return truncate(text, MAX_SUMMARY_CHARS)


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def dashboard_link(alert: Mapping[str, Any]) -> str | None:
    """The alert's dashboard URL with ``from``/``to`` around the alert and ``var-workflow``.

    >>> dashboard_link({"dashboard_url": "http://g/d/x?from=1&to=2", "workflow": "w"})
    'http://g/d/x?from=1&to=2&var-workflow=w'
    """
    url = str(alert.get("dashboard_url") or "")
    if not url:
        return None
    evidence = alert.get("evidence") or {}
    starts = [
        t for t in (evidence.get("window_start"), alert.get("opened_at")) if isinstance(t, int)
    ]
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    # A range the alert producer already chose is kept; otherwise frame the alert.
    if "from" not in query and "to" not in query:
        if starts:
            query["from"] = str((min(starts) - DASHBOARD_PADDING_US) // 1000)
        resolved = alert.get("resolved_at")
        if isinstance(resolved, int):
            query["to"] = str((resolved + DASHBOARD_PADDING_US) // 1000)
        else:
            query["to"] = "now"
    if alert.get("workflow"):
        query["var-workflow"] = str(alert["workflow"])
    return urlunsplit(parts._replace(query=urlencode(query)))


def links(alert: Mapping[str, Any]) -> list[dict[str, str]]:
    found = []
    workflow = alert.get("workflow") or "workflow"
    if dashboard := dashboard_link(alert):
        found.append({"href": dashboard, "text": f"Grafana: {workflow} {alert.get('metric', '')}"})
    if runbook := alert.get("runbook_url"):
        found.append({"href": str(runbook), "text": f"Runbook: {alert.get('kind', 'alert')} alert"})
    return found


def custom_details(alert: Mapping[str, Any]) -> dict[str, Any]:
    baseline = _number(alert.get("baseline_value"))
    current = _number(alert.get("current_value"))
    details: dict[str, Any] = {
        "alert_id": alert.get("alert_id"),
        "transition": alert.get("transition"),
        "kind": alert.get("kind"),
        "severity": alert.get("severity"),
        "workflow": alert.get("workflow"),
        "metric": alert.get("metric"),
        "baseline_value": alert.get("baseline_value"),
        "current_value": alert.get("current_value"),
        "change": change_text(baseline, current) if current is not None else None,
        "score": alert.get("score"),
        "threshold": alert.get("threshold"),
        "bundle_id": alert.get("bundle_id"),
        "opened_at": iso_timestamp(alert["opened_at"])
        if isinstance(alert.get("opened_at"), int)
        else None,
        "evidence": dict(alert.get("evidence") or {}),
        "runbook_url": alert.get("runbook_url"),
        "dashboard_url": alert.get("dashboard_url"),
    }
    return details


def _event_ts(alert: Mapping[str, Any]) -> int | None:
    for key in ("event_ts", "resolved_at", "opened_at"):
        if isinstance(alert.get(key), int):
            return int(alert[key])
    return None


def trigger_event(alert: Mapping[str, Any]) -> dict[str, Any]:
    """A ``trigger`` body without ``routing_key`` (added by :func:`encode_body` at send time)."""
    evidence = alert.get("evidence") or {}
    service = str(alert.get("service") or evidence.get("service") or "")
    workflow = str(alert.get("workflow") or "")
    payload: dict[str, Any] = {
        "summary": summary(alert),
        "source": service or workflow or CLIENT_NAME,
        "severity": pagerduty_severity(alert.get("severity")),
        "component": workflow,
        "group": service or workflow,
        "class": str(alert.get("kind") or ""),
        "custom_details": custom_details(alert),
    }
    if (ts := _event_ts(alert)) is not None:
        payload["timestamp"] = iso_timestamp(ts)
    event: dict[str, Any] = {
        "event_action": "trigger",
        "dedup_key": pagerduty_dedup_key(str(alert["dedup_key"])),
        "payload": payload,
        "client": CLIENT_NAME,
        "links": links(alert),
    }
    if dashboard := dashboard_link(alert):
        event["client_url"] = dashboard
    return fit_body(event)


def resolve_event(alert: Mapping[str, Any]) -> dict[str, Any]:
    return {"event_action": "resolve", "dedup_key": pagerduty_dedup_key(str(alert["dedup_key"]))}


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None (JSON null).

    JSON has no NaN or Infinity; Python's encoder writes them bare, and a strict receiver
    (PagerDuty answers 400) then drops the page. A non-finite score or cost can only come from
    input that slipped past every bound, and the page must still go out.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _encode(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(_finite(doc), default=str, separators=(",", ":"), allow_nan=False).encode()


def _encoded_size(doc: Mapping[str, Any]) -> int:
    return len(_encode(doc))


def fit_body(
    event: dict[str, Any], limit: int = MAX_BODY_BYTES - BODY_MARGIN_BYTES
) -> dict[str, Any]:
    """Shrink ``custom_details`` until the body fits PagerDuty's 512 KB limit.

    Long evidence strings are cut first; if that is not enough the evidence is
    replaced by its key list (the dashboard link still leads to the full picture).
    """
    if _encoded_size(event) <= limit:
        return event
    details = event["payload"]["custom_details"]
    evidence = details.get("evidence") or {}
    details["evidence"] = {
        k: truncate(v, MAX_EVIDENCE_STRING_CHARS) if isinstance(v, str) else v
        for k, v in evidence.items()
    }
    if _encoded_size(event) <= limit:
        return event
    details["evidence"] = {
        "truncated": "evidence exceeded the 512 KB event limit; see the dashboard",
        "keys": [truncate(str(k), 100) for k in list(evidence)[:100]],
    }
    if _encoded_size(event) <= limit:
        return event
    event["payload"]["custom_details"] = {
        "truncated": "details exceeded the 512 KB event limit; see the dashboard",
        "alert_id": truncate(str(details.get("alert_id")), 200),
    }
    return event


def encode_body(event: Mapping[str, Any], routing_key: str | None) -> bytes:
    """Serialize for the wire; the routing key enters the body here and nowhere else."""
    doc = dict(event)
    if routing_key is not None:
        doc = {"routing_key": routing_key, **doc}
    return _encode(doc)
