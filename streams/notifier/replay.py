"""Support for ``driftline replay EVENTS.ndjson --notify``: same notifier, same routing.

Replay sends through the real routes so an operator can test routing against a
staging service before enabling paging. Deliveries are paced by the rate limit
on the wall clock; event time is never slept through.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from driftline.config import PagerDutySettings
from streams.notifier.delivery import Notifier


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


def notify_sync(
    alerts: Iterable[Mapping[str, Any]],
    settings: PagerDutySettings | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    **notifier_options: Any,
) -> list[dict[str, Any]]:
    """Deliver replayed alerts; returns one delivery record per attempt or decision."""
    notifier = Notifier.from_settings(
        settings if settings is not None else PagerDutySettings.model_validate({}),
        environ=environ,
        **notifier_options,
    )
    return notifier.deliver_sync(as_transitions(alerts))


def outcome_counts(delivery_records: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Final outcomes by name, for the one-line summary replay prints to stderr."""
    return dict(Counter(str(r["outcome"]) for r in delivery_records if r["outcome"] != "retrying"))
