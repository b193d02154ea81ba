"""The alert record: field names, types and order, and the lifecycle transition record.

An alert is identified across its life by ``dedup_key`` (kind + workflow + metric +
bundle, DESIGN.md "Alerts"); each time it opens again it gets a new ``alert_id``.
The monitor publishes one *transition record* per lifecycle step: the alert fields
plus ``transition`` (open | update | resolve) and ``event_ts`` (the event time at
which it happened). ``evidence`` is a JSON-able dict: window bounds, sample sizes,
test used, threshold, bundle.
"""

from __future__ import annotations

import hashlib
from typing import Final, Literal

from driftline.schemas.event import Field

AlertKind = Literal["drift", "budget", "routing"]
Severity = Literal["critical", "error", "warning", "info"]
AlertState = Literal["open", "resolved"]
Transition = Literal["open", "update", "resolve"]

KINDS: Final = ("drift", "budget", "routing")
SEVERITIES: Final = ("critical", "error", "warning", "info")  # most severe first
STATES: Final = ("open", "resolved")
TRANSITIONS: Final = ("open", "update", "resolve")

ALERT_FIELDS: Final[tuple[Field, ...]] = (
    Field("alert_id", "str"),
    Field("dedup_key", "str"),
    Field("kind", "str"),
    Field("severity", "str"),
    Field("state", "str"),
    Field("opened_at", "ts"),
    Field("resolved_at", "ts", nullable=True),
    Field("workflow", "str"),
    Field("metric", "str"),
    Field("baseline_value", "float", nullable=True),
    Field("current_value", "float", nullable=True),
    Field("score", "float"),
    Field("threshold", "float", nullable=True),
    Field("bundle_id", "str"),
    Field("evidence", "map"),
    Field("runbook_url", "str"),
    Field("dashboard_url", "str"),
)
ALERT_FIELD_NAMES: Final = tuple(f.name for f in ALERT_FIELDS)

TRANSITION_FIELDS: Final[tuple[Field, ...]] = (
    *ALERT_FIELDS,
    Field("transition", "str"),
    Field("event_ts", "ts"),
)
TRANSITION_FIELD_NAMES: Final = tuple(f.name for f in TRANSITION_FIELDS)

# PagerDuty accepts dedup keys up to 255 characters.
MAX_DEDUP_KEY_CHARS: Final = 255


def dedup_key(kind: str, workflow: str, metric: str, bundle_id: str) -> str:
    """Stable key of one alert condition; long keys keep a prefix plus a hash.

    >>> dedup_key("drift", "support-chat", "input_tokens", "1b5333fe3ace7580")
    'drift/support-chat/input_tokens/1b5333fe3ace7580'
    >>> len(dedup_key("budget", "w" * 400, "cost", ""))
    255
    """
    key = "/".join((kind, workflow, metric, bundle_id))
    if len(key) <= MAX_DEDUP_KEY_CHARS:
        return key
    digest = hashlib.blake2b(key.encode(), digest_size=8).hexdigest()
    return key[: MAX_DEDUP_KEY_CHARS - 17] + "~" + digest


def alert_id(key: str, opened_at_us: int) -> str:
    """Deterministic id of one open-to-resolve episode of ``key``.

    >>> alert_id("drift/a/b/c", 0)
    'd910cc80d546f64c28064108'
    """
    text = f"{key}@{opened_at_us}"
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()
