"""Support for ``driftline replay EVENTS.ndjson --notify``: same notifier, same routing.

Replay sends through the real routes so an operator can test routing against a
staging service before enabling paging. Deliveries are paced by the rate limit
on the wall clock; event time is never slept through: alerts recorded hours apart
leave as fast as the rate limit allows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Final

from driftline.config import PagerDutySettings
from driftline.streams.notifier import records
from driftline.streams.notifier.delivery import Notifier
from driftline.streams.notifier.routing import MissingSecretError, Router

# Outcomes that mean an alert did not reach a destination it was routed to.
FAILED_OUTCOMES: Final = frozenset({records.FAILED_PERMANENT, records.GAVE_UP})


def as_transitions(alerts: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Alert records as transitions: records without ``transition`` are final states,
    so a resolved one becomes open-then-resolve and an open one becomes open.

    >>> [t["transition"] for t in as_transitions([{"state": "resolved"}, {"state": "open"}])]
    ['open', 'resolve', 'open']
    """
    out: list[dict[str, Any]] = []
    for alert in alerts:
        if alert.get("transition"):
            out.append(dict(alert))
        elif alert.get("state") == "resolved":
            out.append({**alert, "transition": "open", "state": "open", "resolved_at": None})
            out.append({**alert, "transition": "resolve"})
        else:
            out.append({**alert, "transition": "open"})
    return out


def _settings(settings: PagerDutySettings | None) -> PagerDutySettings:
    return settings if settings is not None else PagerDutySettings.model_validate({})


def missing_secrets(
    alerts: Iterable[Mapping[str, Any]],
    settings: PagerDutySettings | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> list[str]:
    """What stops a route that some of ``alerts`` would go to, one message per route.

    Checked before sending so a forgotten ``export PAGERDUTY_ROUTING_KEY=...`` fails
    once with a clear message instead of once per alert.

    >>> missing_secrets([{"workflow": "w", "severity": "error"}], environ={})
    ['route default: environment variable PAGERDUTY_ROUTING_KEY is not set; export the PagerDuty integration (routing) key in it']
    """  # noqa: E501
    router = Router.from_settings(_settings(settings), environ)
    used = {route for alert in as_transitions(alerts) for route in router.match(alert)}
    problems = []
    for route in router.routes:
        if route not in used:
            continue
        try:
            router.destination(route)
        except MissingSecretError as exc:
            problems.append(str(exc))
    return problems


def notify_sync(
    alerts: Iterable[Mapping[str, Any]],
    settings: PagerDutySettings | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    **notifier_options: Any,
) -> list[dict[str, Any]]:
    """Deliver replayed alerts; returns one delivery record per attempt or decision.

    ``notifier_options`` go to :class:`Notifier` (``clock``, ``sleep``, ``retry``,
    ``burst``, ...); the rate limit defaults to ``settings.max_events_per_minute``.
    """
    # replay exits when done: nothing would be left to redeliver a held event later
    notifier_options.setdefault("keep_for_redelivery", False)
    notifier = Notifier.from_settings(_settings(settings), environ=environ, **notifier_options)
    return notifier.deliver_sync(as_transitions(alerts))


def outcome_counts(delivery_records: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Final outcomes by name, for the one-line summary replay prints to stderr."""
    return dict(Counter(str(r["outcome"]) for r in delivery_records if r["outcome"] != "retrying"))


def failures(delivery_records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The records of deliveries that failed for good (rejected, or gave up retrying)."""
    return [dict(r) for r in delivery_records if r["outcome"] in FAILED_OUTCOMES]


def summary(delivery_records: Iterable[Mapping[str, Any]], transitions: int) -> str:
    """One line for stderr: outcome counts and the targets (route@host, never a key).

    >>> summary([{"outcome": "retrying", "target": "default@pd"},
    ...          {"outcome": "delivered", "target": "default@pd"}], 1)
    'notified 1 alert transitions: delivered=1 (targets: default@pd)'
    """
    rows = list(delivery_records)
    counts = outcome_counts(rows)
    outcome_text = " ".join(f"{name}={counts[name]}" for name in sorted(counts)) or "nothing sent"
    targets = sorted({str(r["target"]) for r in rows if r.get("target")})
    where = f" (targets: {', '.join(targets)})" if targets else ""
    return f"notified {transitions} alert transitions: {outcome_text}{where}"


__all__ = [
    "FAILED_OUTCOMES",
    "as_transitions",
    "failures",
    "missing_secrets",
    "notify_sync",
    "outcome_counts",
    "summary",
]
