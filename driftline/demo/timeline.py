"""The demo's scripted incident timeline, and how it is cut into simulator segments.

The simulator's incidents start at a time and last to the end of a run. An incident that
also *ends* (so its alerts can be seen resolving) is played by running the simulator in
consecutive segments, cut wherever an incident starts or ends; each segment runs with the
incidents active during it.

Positions are fractions of the run, so ``--duration 60`` plays the same story faster and
``--duration 600`` slower. The first 15% is normal traffic, for the baselines to warm up.

>>> timeline = scripted_timeline(120)
>>> [(i.kind, i.workflow, i.start_s, i.end_s) for i in timeline][:2]
[('retry-storm', 'rag-search', 18.0, 48.0), ('unapproved-model', 'batch-summarizer', 30.0, 60.0)]
>>> [(s.start_s, s.end_s, [i.kind for i in s.incidents]) for s in segments(timeline, 120)][:3]
[(0.0, 18.0, []), (18.0, 30.0, ['retry-storm']), (30.0, 42.0, ['retry-storm', 'unapproved-model'])]
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from driftline.simulator import Incident
from driftline.simulator.incidents import (
    CANARY,
    COST_RUNAWAY,
    RETRY_STORM,
    TOKEN_DRIFT,
    UNAPPROVED_MODEL,
)

# Alert metrics that count as detecting each kind of incident (budget metrics may carry a
# "[tenant=...]" or "[route=...]" scope suffix; canary comparisons end in ":canary").
_EVIDENCE_METRICS: Final[dict[str, frozenset[str]]] = {
    RETRY_STORM: frozenset({"retries", "retries_per_request"}),
    UNAPPROVED_MODEL: frozenset({"unallowed_model"}),
    # Answers twice as long: more of them stop at the length limit (finish_reason).
    TOKEN_DRIFT: frozenset(
        {"output_tokens", "output_length", "latency", "finish_reason", "tokens_per_request"}
    ),
    # Longer agent loops on bigger prompts: spend first, and the calls themselves change.
    COST_RUNAWAY: frozenset(
        {
            "cost_usd_per_window",
            "cost_burn_rate",
            "tokens_per_window",
            "input_tokens",
            "output_tokens",
            "output_length",
            "latency",
            "finish_reason",
            "loop_depth",
            "amplification",
        }
    ),
}
# An alert seen this long after its incident ended still counts as its evidence (the last
# traces of an incident close and reach the detectors a little after it).
_LATE_S: Final = 30.0


@dataclass(frozen=True, slots=True)
class ScriptedIncident:
    """One incident of the story: what happens, where, from when to when (run seconds)."""

    kind: str
    workflow: str
    start_s: float
    end_s: float | None  # None: lasts to the end of the run
    magnitude: float
    title: str  # what the live view says is happening
    # False for a change that is not itself a fault (the canary rollout): an alert on it
    # is shown, its absence is not a miss.
    expects_alert: bool = True

    def active(self, at_s: float) -> bool:
        return self.start_s <= at_s and (self.end_s is None or at_s < self.end_s)

    def detected_by(self, alert: Mapping[str, Any]) -> bool:
        """Whether ``alert`` (a transition record) is evidence of this incident."""
        if str(alert.get("workflow")) != self.workflow:
            return False
        metric = str(alert.get("metric", ""))
        if self.kind == CANARY:
            return metric.endswith(":canary")
        base = metric.split("[", 1)[0]
        return ":" not in base and base in _EVIDENCE_METRICS.get(self.kind, frozenset())


def explain(
    alert: Mapping[str, Any],
    seen_s: float,
    timeline: Sequence[ScriptedIncident],
    bundle_since_s: float | None = None,
) -> ScriptedIncident | None:
    """The scripted incident ``alert`` is evidence of, if any.

    ``seen_s`` is when the alert was seen and ``bundle_since_s`` when the alert's bundle
    first appeared, both in run seconds. A canary alert counts only for a bundle that
    appeared after the canary started: every model a workflow calls is a bundle of its own,
    and their comparisons are not the rollout.

    >>> retry = scripted_timeline(100)[0]
    >>> alert = {"workflow": "rag-search", "metric": "retries_per_request"}
    >>> explain(alert, 20.0, [retry]) is retry, explain(alert, 10.0, [retry])
    (True, None)
    """
    for incident in timeline:
        if seen_s < incident.start_s or not incident.detected_by(alert):
            continue
        if incident.end_s is not None and seen_s > incident.end_s + _LATE_S:
            continue
        new_bundle = bundle_since_s is not None and bundle_since_s >= incident.start_s
        if incident.kind == CANARY and not new_bundle:
            continue
        return incident
    return None


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch of the run with one fixed set of active incidents."""

    start_s: float
    end_s: float
    incidents: tuple[Incident, ...]

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def scripted_timeline(duration_s: float) -> tuple[ScriptedIncident, ...]:
    """The demo's story over a run of ``duration_s`` seconds.

    A retry storm and an unapproved model that both end (their alerts resolve), a bundle
    change rolled out as a canary and output tokens doubling after it, and an agent whose
    loop runs away with the cost budget. The rollout itself is a change, not a fault: the
    canary comparison may or may not flag the new bundle, the token drift after it must be
    caught.
    """
    if duration_s <= 0:
        raise ValueError(f"duration must be > 0 seconds, got {duration_s}")

    def at(fraction: float) -> float:
        return round(duration_s * fraction, 3)

    return (
        ScriptedIncident(
            RETRY_STORM,
            "rag-search",
            at(0.15),
            at(0.40),
            0.6,
            "retry storm: 60% of rag-search attempts fail and are retried",
        ),
        ScriptedIncident(
            UNAPPROVED_MODEL,
            "batch-summarizer",
            at(0.25),
            at(0.50),
            0.3,
            "shadow routing: 30% of batch-summarizer calls go to an unapproved model",
        ),
        ScriptedIncident(
            CANARY,
            "support-chat",
            at(0.35),
            None,
            0.3,
            "bundle change: prompt support-v13 rolled out to 30% of support-chat (canary)",
            expects_alert=False,
        ),
        ScriptedIncident(
            COST_RUNAWAY,
            "agent-planner",
            at(0.50),
            None,
            4.0,
            "cost runaway: agent-planner loops 4x longer on bigger prompts",
        ),
        ScriptedIncident(
            TOKEN_DRIFT,
            "support-chat",
            at(0.60),
            None,
            2.0,
            "token drift after the rollout: support-chat answers twice as long",
        ),
    )


def segments(timeline: Sequence[ScriptedIncident], duration_s: float) -> list[Segment]:
    """Cut ``[0, duration_s)`` at every incident start and end."""
    cuts = {0.0, float(duration_s)}
    for incident in timeline:
        cuts.add(incident.start_s)
        if incident.end_s is not None:
            cuts.add(incident.end_s)
    bounds = sorted(c for c in cuts if 0.0 <= c <= duration_s)
    out = []
    for start, end in itertools.pairwise(bounds):
        active = tuple(
            Incident(kind=i.kind, at_s=0.0, workflow=i.workflow, magnitude=i.magnitude)
            for i in timeline
            if i.active(start)
        )
        out.append(Segment(start, end, active))
    return out
