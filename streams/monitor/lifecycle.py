"""The alert lifecycle: open while the condition holds, resolve once it has been clear.

Per ``dedup_key`` (DESIGN.md, "Alerts"):

- ``open`` on the first hit (a new ``alert_id``);
- ``update`` while open, only when the severity rises or the score grows by more than
  ``MATERIAL_SCORE_GROWTH`` over the last published one: the same incident, never a
  second page (the notifier does not send updates to PagerDuty);
- ``resolve`` once the alert's condition has been clear for ``alerts.hold_down_s`` of
  the workflow's event time. A condition is either *state* (``drift``, ``canary``,
  ``window``, ``burn``, ``untracked``) or *recent* (per-call rules: it holds while hits
  keep coming, so it is clear from the last hit). A state condition is re-tested on every
  review by the rule that raised it, with a lower bar to stay open than to open, and must
  be seen clear at every review of ``hold_down_s`` (Prometheus' ``keep_firing_for``): seen holding
  again, its clear time starts over. A shift that sits near the stay-open bar dips below
  it on noise now and then; counting clear from the first dip resolved such alerts while
  the shift lasted, and the next detection reopened them (4 flaps on 3 held-out seeds of
  ``bench/bench_replay.py --families blind``, 1 after). A shift that persists stays open
  whatever the timer; one that ends resolves once.
- ``resolve`` with reason ``accepted`` when an operator accepts the new behaviour
  (``driftline baseline accept``): :func:`resolve_now`.

A hit after a resolve opens a new alert with a new ``alert_id``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from driftline.config import AlertSettings
from driftline.schemas.alert import SEVERITIES, alert_id
from driftline.streams.monitor.hits import Condition, Hit
from driftline.streams.monitor.links import dashboard_url, runbook_url

MATERIAL_SCORE_GROWTH: Final = 0.25
RESOLVED_RECOVERED: Final = "recovered"
RESOLVED_ACCEPTED: Final = "accepted"


@dataclass(slots=True)
class OpenAlert:
    record: dict[str, Any]
    condition: Condition
    last_hit_ts: int
    emitted_score: float
    emitted_severity: str
    # Event time at which a state condition was first seen clear (None: it holds).
    clear_since: int | None = None

    def resolve_at(self, hold_us: int) -> int | None:
        """Event time at which this alert resolves unless its condition holds again."""
        if self.condition == "recent":
            return self.last_hit_ts + hold_us
        return None if self.clear_since is None else self.clear_since + hold_us


def apply_hit(alerts: dict[str, OpenAlert], hit: Hit, settings: AlertSettings) -> list[dict]:
    """Open the hit's alert, or update it when the hit is materially worse."""
    key = hit.key
    alert = alerts.get(key)
    if alert is None:
        record: dict[str, Any] = {
            "alert_id": alert_id(key, hit.ts),
            "dedup_key": key,
            "kind": hit.kind,
            "severity": hit.severity,
            "state": "open",
            "opened_at": hit.ts,
            "resolved_at": None,
            "workflow": hit.workflow,
            "metric": hit.metric,
            "bundle_id": hit.bundle_id,
            "runbook_url": runbook_url(settings, hit.kind, hit.metric),
        }
        _fill(record, hit, settings)
        alerts[key] = OpenAlert(record, hit.condition, hit.ts, hit.score, hit.severity)
        return [_transition(record, "open", hit.ts)]
    alert.last_hit_ts = max(alert.last_hit_ts, hit.ts)
    alert.clear_since = None  # a hit is the condition observed holding
    record = alert.record
    # Severity only rises while open: a falling one is not news to the responder.
    if severity_rank(hit.severity) < severity_rank(record["severity"]):
        record["severity"] = hit.severity
    _fill(record, hit, settings)
    grew = hit.score > alert.emitted_score * (1.0 + MATERIAL_SCORE_GROWTH)
    if record["severity"] != alert.emitted_severity or grew:
        alert.emitted_score = max(alert.emitted_score, hit.score)
        alert.emitted_severity = record["severity"]
        return [_transition(record, "update", hit.ts)]
    return []


def review(
    alerts: dict[str, OpenAlert],
    now: int,
    hold_us: int,
    holds: Callable[[OpenAlert], bool] | None,
) -> list[dict]:
    """Re-test state conditions at ``now`` (``holds`` None: only resolve what is due),
    then resolve every alert clear for ``hold_us`` at every review since; in dedup-key
    order."""
    out = []
    for key in sorted(alerts):
        alert = alerts[key]
        if holds is not None and alert.condition != "recent":
            if not holds(alert):
                if alert.clear_since is None:
                    alert.clear_since = max(now, alert.last_hit_ts)
            else:
                alert.clear_since = None  # seen holding again: clear is counted anew
        due = alert.resolve_at(hold_us)
        if due is not None and due <= now:
            out.append(resolve_now(alerts, key, due, RESOLVED_RECOVERED))
    return out


def due_before(alerts: dict[str, OpenAlert], ts: int, hold_us: int) -> list[dict]:
    """Resolve the alerts already due strictly before ``ts`` (a hit at ``ts`` then opens a
    new alert instead of extending an incident that had ended)."""
    out = []
    for key in sorted(alerts):
        due = alerts[key].resolve_at(hold_us)
        if due is not None and due < ts:
            out.append(resolve_now(alerts, key, due, RESOLVED_RECOVERED))
    return out


def resolve_now(alerts: dict[str, OpenAlert], key: str, ts: int, reason: str) -> dict:
    """Remove ``key`` from the open alerts and return its ``resolve`` transition."""
    alert = alerts.pop(key)
    record = alert.record
    record["state"] = "resolved"
    record["resolved_at"] = ts
    record["evidence"] = {**record.get("evidence", {}), "resolution": reason}
    return _transition(record, "resolve", ts)


def _fill(record: dict[str, Any], hit: Hit, settings: AlertSettings) -> None:
    record["baseline_value"] = hit.baseline
    record["current_value"] = hit.current
    record["score"] = float(hit.score)
    record["threshold"] = hit.threshold
    record["evidence"] = hit.evidence
    record["dashboard_url"] = dashboard_url(settings, hit.workflow, record["opened_at"], hit.ts)


def severity_rank(severity: str) -> int:
    """0 for the most severe (``SEVERITIES`` order); unknown ones last."""
    return SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES)


def _transition(record: dict[str, Any], transition: str, ts: int) -> dict[str, Any]:
    out = dict(record)
    out["evidence"] = dict(record.get("evidence") or {})
    out["transition"] = transition
    out["event_ts"] = ts
    return out
