"""Operator commands to the monitor, carried on ``llm_events`` in order with the traffic.

``driftline baseline accept WORKFLOW`` publishes one control record onto ``llm_events``
keyed by the workflow: it reaches exactly the worker that owns the workflow's monitor
state, after the events published before it and before those published after it, and a
worker restarted after applying it skips it by offset like any other message. Its value is
an ``llm_events`` message with no events or traces plus a ``control`` object, so readers
that only store events see nothing to store.
"""

from __future__ import annotations

import re
from typing import Any, Final

import orjson

from driftline.detectors import METRIC_NAMES
from driftline.schemas.checks import MAX_SAFE_NAME_CHARS
from driftline.schemas.event import MAX_IDENTITY_CHARS, UNSAFE_NAME_CHAR

CONTROL_FIELD: Final = "control"
ACCEPT_BASELINE: Final = "accept_baseline"
RECORD_TYPE_CONTROL: Final = b"control"  # value of the record-type header
BUNDLE_ID: Final = re.compile(r"[0-9a-f]{16}")  # schemas.event.bundle_id


class ControlError(ValueError):
    """A control record is malformed; the message says which field."""


def accept_baseline_message(
    workflow: str, metric: str | None, bundle_id: str | None, requested_at_us: int, by: str
) -> bytes:
    """The ``llm_events`` value that asks the monitor to accept ``workflow``'s current
    behaviour (one metric and/or one bundle when given) as its new baseline.

    >>> value = accept_baseline_message("chat", "output_tokens", None, 5, "ops")
    >>> parse_control(value)["metric"], parse_control(b'{"events": [], "traces": []}')
    ('output_tokens', None)
    """
    control = {
        "action": ACCEPT_BASELINE,
        "workflow": workflow,
        "metric": metric,
        "bundle_id": bundle_id,
        "requested_at": requested_at_us,
        "requested_by": by,
    }
    check_control(control)
    return orjson.dumps({"events": [], "traces": [], CONTROL_FIELD: control})


def parse_control(value: bytes) -> dict[str, Any] | None:
    """The control record in an ``llm_events`` value, or None for an ordinary message."""
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise ControlError(f"llm_events value is not JSON: {exc}") from None
    control = doc.get(CONTROL_FIELD) if isinstance(doc, dict) else None
    if control is None:
        return None
    check_control(control)
    return dict(control)


def check_control(control: Any) -> None:
    if not isinstance(control, dict) or control.get("action") != ACCEPT_BASELINE:
        raise ControlError(f"control.action must be {ACCEPT_BASELINE!r}")
    # Messages name the field, never quote the value: it may be anything, of any length.
    workflow = control.get("workflow")
    if not _is_safe_name(workflow):
        raise ControlError(
            "control.workflow must be a workflow name as the monitor keys it: 1 to "
            f"{MAX_SAFE_NAME_CHARS} letters, digits, spaces or . : / @ + ~ - _ (a span's "
            "name with other characters is made safe by the normalizer: use that form)"
        )
    metric = control.get("metric")
    if metric is not None and metric not in METRIC_NAMES:
        raise ControlError(f"control.metric must be one of {sorted(METRIC_NAMES)}")
    bundle_id = control.get("bundle_id")
    if bundle_id is not None and not (
        isinstance(bundle_id, str) and BUNDLE_ID.fullmatch(bundle_id) is not None
    ):
        raise ControlError("control.bundle_id must be 16 hex digits when given (llm_requests)")
    requested_at = control.get("requested_at")
    if not isinstance(requested_at, int) or isinstance(requested_at, bool) or requested_at < 0:
        raise ControlError("control.requested_at must be microseconds since the epoch")
    by = control.get("requested_by", "")
    if not isinstance(by, str) or len(by) > MAX_IDENTITY_CHARS or not by.isprintable():
        raise ControlError(
            f"control.requested_by must be printable text of at most {MAX_IDENTITY_CHARS}"
        )


def _is_safe_name(name: Any) -> bool:
    return (
        isinstance(name, str)
        and 0 < len(name) <= MAX_SAFE_NAME_CHARS
        and UNSAFE_NAME_CHAR.search(name) is None
    )
