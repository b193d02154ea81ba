"""Delivery log records: one plain dict per attempt or per decision, for ``alert_deliveries``.

Field names are the table's columns (``driftline.schemas.tables.DELIVERIES``), outcomes its
documented values. ``status_code`` is 0 when no HTTP response
arrived (network error, timeout) or no request was made (unrouted, coalesced).
``target`` is ``<route name>@<URL host>``: never the routing key, never a URL path,
because webhook URLs carry their secret in the path.
"""

from __future__ import annotations

from typing import Any, Final

from driftline.schemas.tables import DELIVERIES, Outcome

__all__ = [
    "COALESCED",
    "DELIVERED",
    "DELIVERY_FIELDS",
    "FAILED_PERMANENT",
    "FINAL_OUTCOMES",
    "GAVE_UP",
    "MAX_ERROR_CHARS",
    "RETRYING",
    "UNROUTED",
    "Outcome",
    "delivery_record",
]

DELIVERED: Final[Outcome] = "delivered"
RETRYING: Final[Outcome] = "retrying"
FAILED_PERMANENT: Final[Outcome] = "failed_permanent"
GAVE_UP: Final[Outcome] = "gave_up"
UNROUTED: Final[Outcome] = "unrouted"
COALESCED: Final[Outcome] = "coalesced"

# Outcomes after which nothing more happens to that transition on that route.
FINAL_OUTCOMES: Final = frozenset({DELIVERED, FAILED_PERMANENT, GAVE_UP, UNROUTED, COALESCED})

DELIVERY_FIELDS: Final = DELIVERIES.columns

MAX_ERROR_CHARS: Final = 1000


def delivery_record(
    transition: dict[str, Any],
    *,
    event_action: str,
    attempt: int,
    outcome: Outcome,
    sent_at: int,
    target: str,
    status_code: int = 0,
    error: str = "",
    latency_ms: float = 0.0,
) -> dict[str, Any]:
    """One row of the delivery log; ``error`` must already be scrubbed of secrets."""
    return {
        "alert_id": str(transition.get("alert_id", "")),
        "dedup_key": str(transition.get("dedup_key", "")),
        "event_action": event_action,
        "attempt": attempt,
        "status_code": status_code,
        "outcome": outcome,
        "error": error[:MAX_ERROR_CHARS],
        "latency_ms": round(latency_ms, 3),
        "sent_at": sent_at,
        "target": target,
    }
