"""What every rule returns: a :class:`Hit`, one observation that an alert condition holds.

A hit names its alert (``kind`` + ``workflow`` + ``metric`` + ``bundle_id`` make the
dedup key), how bad it is (``severity``, ``score``) and what was seen (``evidence``).
``condition`` says how the alert it opens is kept open afterwards (see
:mod:`streams.monitor.lifecycle`): re-tested state for drift, canary and window budgets
and bundles left out of monitoring, recent hits for per-call rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

from driftline.schemas.alert import dedup_key

Condition = Literal["recent", "drift", "canary", "window", "burn", "untracked"]
CONDITIONS: Final = ("recent", "drift", "canary", "window", "burn", "untracked")


@dataclass(frozen=True, slots=True, kw_only=True)
class Hit:
    ts: int
    workflow: str
    kind: str
    metric: str
    bundle_id: str
    severity: str
    score: float
    threshold: float | None
    baseline: float | None
    current: float | None
    evidence: dict[str, Any]
    condition: Condition = "recent"

    @property
    def key(self) -> str:
        return dedup_key(self.kind, self.workflow, self.metric, self.bundle_id)


# The metrics of the cap warnings: a workflow's cap of open alerts leaves them out.
TRACKED_WORKFLOWS: Final = "tracked_workflows"
TRACKED_BUNDLES: Final = "tracked_bundles"
OPEN_ALERTS: Final = "open_alerts"
CAP_METRICS: Final = frozenset({TRACKED_WORKFLOWS, TRACKED_BUNDLES, OPEN_ALERTS})


def cap_warning(
    ts: int,
    workflow: str,
    metric: str,
    setting: str,
    cap: int,
    evidence: dict[str, Any],
    severity: str = "warning",
    condition: Condition = "recent",
) -> Hit:
    """The warning that a cardinality cap (``setting``, at ``cap``) left something
    unmonitored: one incident per workflow and cap, ``evidence`` listing what was left out.
    ``condition``: ``untracked`` for a bundle left out (held while one still serves),
    else ``recent`` (held while more is left out).

    >>> cap_warning(1, "w", "tracked_bundles", "detectors.x", 2, {"offenders": ["b3"]}).key
    'budget/w/tracked_bundles/'
    """
    return Hit(
        ts=ts,
        workflow=workflow,
        kind="budget",
        metric=metric,
        bundle_id="",
        severity=severity,
        score=1.0,
        threshold=float(cap),
        baseline=None,
        current=float(cap + 1),
        evidence={**evidence, "setting": setting},
        condition=condition,
    )


def event_time(record: dict[str, Any]) -> int:
    """Event time of an event or trace: its end, else its start (microseconds).

    >>> event_time({"start_ts": 5, "end_ts": 9}), event_time({"start_ts": 5})
    (9, 5)
    """
    return int(record.get("end_ts") or record.get("start_ts") or 0)


def record_order(record: dict[str, Any]) -> tuple[int, str, str]:
    """Event-time order of records, ties broken by ids (a deterministic replay)."""
    return (event_time(record), str(record.get("trace_id", "")), str(record.get("span_id", "")))
