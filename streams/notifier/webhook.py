"""Generic webhook bodies: Slack-compatible text, or an Alertmanager-style payload.

Slack incoming webhooks accept ``{"text": ...}`` with ``<url|label>`` links; the
Alertmanager webhook format (version 4) is what most chat bridges and incident
tools already parse.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from driftline.streams.notifier.payload import (
    custom_details,
    dashboard_link,
    format_duration,
    iso_timestamp,
    summary,
    truncate,
)

MAX_SLACK_TEXT_CHARS: Final = 3000  # a Slack section block's limit; keeps messages readable
ALERTMANAGER_ZERO_TIME: Final = "0001-01-01T00:00:00Z"  # Alertmanager's "not ended yet"


def _is_resolve(alert: Mapping[str, Any]) -> bool:
    return alert.get("transition") == "resolve" or alert.get("state") == "resolved"


def slack_body(alert: Mapping[str, Any]) -> dict[str, Any]:
    line = summary(alert)
    if _is_resolve(alert):
        opened, resolved = alert.get("opened_at"), alert.get("resolved_at")
        lasted = ""
        if isinstance(opened, int) and isinstance(resolved, int):
            lasted = f" after {format_duration(max(0, resolved - opened) / 1_000_000)}"
        evidence = alert.get("evidence")
        accepted = isinstance(evidence, Mapping) and evidence.get("resolution") == "accepted"
        why = " (accepted as the new baseline)" if accepted else ""
        head = f":white_check_mark: *RESOLVED{lasted}*{why} {line}"
    else:
        severity = str(alert.get("severity", "")).upper()
        head = f":rotating_light: *{severity}* {line}"
    parts = [head]
    link_parts = []
    if dashboard := dashboard_link(alert):
        link_parts.append(f"<{dashboard}|dashboard>")
    if runbook := alert.get("runbook_url"):
        link_parts.append(f"<{runbook}|runbook>")
    if link_parts:
        parts.append(" | ".join(link_parts))
    parts.append(f"dedup_key `{alert.get('dedup_key', '')}`")
    return {"text": truncate("\n".join(parts), MAX_SLACK_TEXT_CHARS)}


def alertmanager_body(alert: Mapping[str, Any], receiver: str) -> dict[str, Any]:
    status = "resolved" if _is_resolve(alert) else "firing"
    labels = {
        "alertname": f"driftline_{alert.get('kind', 'alert')}",
        "workflow": str(alert.get("workflow", "")),
        "metric": str(alert.get("metric", "")),
        "severity": str(alert.get("severity", "")),
        "kind": str(alert.get("kind", "")),
        "bundle_id": str(alert.get("bundle_id", "")),
        "dedup_key": str(alert.get("dedup_key", "")),
    }
    details = custom_details(alert)
    annotations = {
        "summary": summary(alert),
        "description": (
            f"baseline {details['baseline_value']}, current {details['current_value']}, "
            f"score {details['score']}, threshold {details['threshold']}"
        ),
        "runbook_url": str(alert.get("runbook_url") or ""),
        "dashboard_url": dashboard_link(alert) or "",
    }
    opened, resolved = alert.get("opened_at"), alert.get("resolved_at")
    entry = {
        "status": status,
        "labels": labels,
        "annotations": annotations,
        "startsAt": iso_timestamp(opened) if isinstance(opened, int) else ALERTMANAGER_ZERO_TIME,
        "endsAt": iso_timestamp(resolved) if isinstance(resolved, int) else ALERTMANAGER_ZERO_TIME,
        "generatorURL": annotations["dashboard_url"],
        "fingerprint": str(alert.get("alert_id", "")),
    }
    return {
        "version": "4",
        "groupKey": str(alert.get("dedup_key", "")),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": receiver,
        "groupLabels": {"alertname": labels["alertname"], "workflow": labels["workflow"]},
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": annotations["dashboard_url"],
        "alerts": [entry],
    }
