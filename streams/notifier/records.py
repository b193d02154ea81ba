"""Delivery log records: one plain dict per attempt or per decision, for ``alert_deliveries``.

Field names match the ClickHouse table. ``status_code`` is 0 when no HTTP response
arrived (network error, timeout) or no request was made (unrouted, coalesced).
``target`` is ``<route name>@<URL host>``: never the routing key, never a URL path,
because webhook URLs carry their secret in the path.
"""

from __future__ import annotations

from typing import Any, Final, Literal

Outcome = Literal["delivered", "retrying", "failed_permanent", "gave_up", "unrouted", "coalesced"]

DELIVERED: Final[Outcome] = "delivered"
RETRYING: Final[Outcome] = "retrying"
FAILED_PERMANENT: Final[Outcome] = "failed_permanent"
GAVE_UP: Final[Outcome] = "gave_up"
UNROUTED: Final[Outcome] = "unrouted"
COALESCED: Final[Outcome] = "coalesced"

# Outcomes after which nothing more happens to that transition on that route.
FINAL_OUTCOMES: Final = frozenset({DELIVERED, FAILED_PERMANENT, GAVE_UP, UNROUTED, COALESCED})

DELIVERY_FIELDS: Final = (
    "alert_id",
    "dedup_key",
    "event_action",
    "attempt",
    "status_code",
    "outcome",
    "error",
    "latency_ms",
    "sent_at",
    "target",
)

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
