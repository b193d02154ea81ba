"""What was last delivered per (route, dedup key): the notifier's memory across restarts.

The stream worker stores each entry in a changelog-backed table as soon as it is
recorded and feeds :meth:`DeliveryLedger.load` at start, so a transition replayed
from Kafka after a restart is recognised: an alert already resolved is not
re-triggered and an open one is not paged twice.

A transition read from ``llm_alerts`` carries its offset (:data:`SOURCE_OFFSET`);
the entry keeps the offset of the last transition delivered on its route, and any
transition at or below it is skipped whatever its alert. The alert-level checks alone
miss one case: a dedup key that opened, resolved and opened again, re-read from an
offset before the first open, would page the first (older) alert again.

The ledger is also the dead letter of deliveries: an event kept for redelivery on a failing
route is an entry ``held-<digest>:<dedup key>`` holding the whole transition, written before
the worker commits the offset it came from, and released (a tombstone) once the event is
settled. A worker that restarts resumes the held events it loads (:meth:`DeliveryLedger.held`).
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping
from typing import Any

MaterialFields = ("severity", "current_value", "score")
SOURCE_OFFSET = "source_offset"  # a transition's llm_alerts offset, set by the stream worker


HELD_PREFIX = "held-"


def ledger_key(route_id: str, dedup_key: str) -> str:
    return f"{route_id}:{dedup_key}"


def held_key(route_id: str, transition: Mapping[str, Any], event_action: str) -> str:
    """The entry of one event kept for redelivery: unique per route, alert, transition and
    ``llm_alerts`` offset; the part after the first ``:`` is the dedup key, as in every entry.

    >>> held_key("r1", {"alert_id": "a", "dedup_key": "k:x", "transition": "open"}, "trigger")
    'held-00b96bfbb22cb4a298a1a284:k:x'
    """
    identity = "|".join(
        str(part)
        for part in (
            route_id,
            transition.get("alert_id"),
            transition.get("transition"),
            event_action,
            transition.get("event_ts"),
            transition.get(SOURCE_OFFSET),
        )
    )
    digest = hashlib.blake2b(identity.encode(), digest_size=12).hexdigest()
    return f"{HELD_PREFIX}{digest}:{transition.get('dedup_key', '')}"


def _relative_change(before: object, after: object) -> float:
    if not isinstance(before, int | float) or not isinstance(after, int | float):
        return 0.0 if before == after else float("inf")
    if before == after:
        return 0.0
    return abs(after - before) / abs(before) if before else float("inf")


def skip_reason(
    last: Mapping[str, Any] | None,
    transition: Mapping[str, Any],
    event_action: str,
    material_change: float,
) -> str | None:
    """Why this transition must not be sent given the last delivered state, or None.

    >>> last = {"alert_id": "a1", "event_action": "resolve", "offset": 9}
    >>> skip_reason(last, {"alert_id": "a1", "transition": "open"}, "trigger", 0.05)
    'alert a1 is already resolved on this route; not re-triggering'
    >>> older = {"alert_id": "a0", "transition": "open", SOURCE_OFFSET: 4}
    >>> skip_reason(last, older, "trigger", 0.05)
    'llm_alerts offset 4 was handled already on this route (last delivered: offset 9)'
    """
    if last is None:
        return None
    offset, handled = transition.get(SOURCE_OFFSET), last.get("offset")
    if offset is not None and handled is not None and int(offset) <= int(handled):
        return (
            f"llm_alerts offset {offset} was handled already on this route "
            f"(last delivered: offset {handled})"
        )
    if last.get("alert_id") != transition.get("alert_id"):
        return None
    alert_id = transition.get("alert_id")
    if last.get("event_action") == "resolve":
        if event_action == "resolve":
            return f"resolve of alert {alert_id} already delivered"
        return f"alert {alert_id} is already resolved on this route; not re-triggering"
    if event_action == "resolve":
        return None
    if transition.get("transition") != "update":
        return f"trigger of alert {alert_id} already delivered"
    if last.get("severity") != transition.get("severity"):
        return None
    change = max(
        _relative_change(last.get(name), transition.get(name))
        for name in ("current_value", "score")
    )
    if change >= material_change and change > 0:
        return None
    return (
        f"update of alert {alert_id} is not a material change since the last delivered "
        f"trigger (relative change {change:.3g} < {material_change:g})"
    )


def already_paged(last: Mapping[str, Any] | None, transition: Mapping[str, Any]) -> str | None:
    """Why an ``update`` must not go to PagerDuty: its alert's trigger was delivered there.

    An update is the same incident getting worse; a second trigger would page again.

    >>> paged = {"alert_id": "a1", "event_action": "trigger"}
    >>> already_paged(paged, {"alert_id": "a1", "transition": "update"})
    'alert a1 is paged already; an update of an open incident does not page again'
    >>> already_paged(None, {"alert_id": "a1", "transition": "update"}) is None  # not paged yet
    True
    """
    if transition.get("transition") != "update" or last is None:
        return None
    if last.get("alert_id") != transition.get("alert_id") or last.get("event_action") != "trigger":
        return None
    return (
        f"alert {transition.get('alert_id')} is paged already; an update of an open incident "
        "does not page again"
    )


class DeliveryLedger:
    """Last delivered event per (route, dedup key), exportable as a plain dict."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, Any]] = {}
        self._changed: set[str] = set()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, route_id: str, dedup_key: str) -> dict[str, Any] | None:
        return self._entries.get(ledger_key(route_id, dedup_key))

    def record(
        self, route_id: str, transition: Mapping[str, Any], event_action: str, delivered_at: int
    ) -> dict[str, Any]:
        """Remember a delivered event; returns ``{ledger key: entry}`` (a copy)."""
        key = ledger_key(route_id, str(transition.get("dedup_key", "")))
        self._entries[key] = {
            "alert_id": transition.get("alert_id"),
            "dedup_key": transition.get("dedup_key"),
            "event_action": event_action,
            "delivered_at": delivered_at,
            "offset": transition.get(SOURCE_OFFSET),
            **{name: transition.get(name) for name in MaterialFields},
        }
        self._changed.add(key)
        return {key: dict(self._entries[key])}

    def hold(
        self,
        key: str,
        route_id: str,
        transition: Mapping[str, Any],
        event_action: str,
        held_at: int,
    ) -> dict[str, Any]:
        """Keep an event for redelivery; returns ``{key: entry}`` to make durable."""
        self._entries[key] = {
            "dedup_key": transition.get("dedup_key"),
            "route_id": route_id,
            "event_action": event_action,
            "held": dict(transition),
            "delivered_at": held_at,  # when it was held: the newer of two copies wins in load
        }
        self._changed.add(key)
        return {key: dict(self._entries[key])}

    def release(self, key: str, dedup_key: Any, released_at: int) -> dict[str, Any]:
        """The held event is settled: a tombstone, so that no restart resumes it."""
        self._entries[key] = {"dedup_key": dedup_key, "released": True, "delivered_at": released_at}
        self._changed.add(key)
        return {key: dict(self._entries[key])}

    def held(self) -> list[tuple[str, dict[str, Any]]]:
        """Events kept for redelivery and not yet released, oldest ``llm_alerts`` offset first."""
        entries = [
            (key, entry)
            for key, entry in self._entries.items()
            if key.startswith(HELD_PREFIX) and isinstance(entry.get("held"), Mapping)
        ]
        return sorted(
            entries,
            key=lambda item: (
                int(item[1]["held"].get(SOURCE_OFFSET) or 0),
                int(item[1]["held"].get("event_ts") or 0),
                int(item[1].get("delivered_at") or 0),
            ),
        )

    def export(self) -> dict[str, dict[str, Any]]:
        return copy.deepcopy(self._entries)

    def load(self, state: Mapping[str, Mapping[str, Any]]) -> None:
        """Merge exported state in (a newer ``delivered_at`` wins per key)."""
        for key, entry in state.items():
            mine = self._entries.get(key)
            newer = mine is None or int(entry.get("delivered_at", 0)) >= int(mine["delivered_at"])
            if newer:
                self._entries[key] = dict(entry)

    def pop_changes(self) -> dict[str, dict[str, Any]]:
        """Entries changed since the last call: what to write to the changelog table."""
        changes = {key: dict(self._entries[key]) for key in self._changed}
        self._changed.clear()
        return changes

    def dedup_keys(self) -> set[str]:
        """Dedup keys with at least one entry."""
        return {str(entry.get("dedup_key", "")) for entry in self._entries.values()}

    def prune(self, delivered_before: int) -> list[str]:
        """Forget resolved alerts and released events settled before a time (never an event
        still held); returns the keys to delete."""
        gone = [
            key
            for key, entry in self._entries.items()
            if (entry.get("event_action") == "resolve" or entry.get("released"))
            and not entry.get("held")
            and int(entry.get("delivered_at", 0)) < delivered_before
        ]
        for key in gone:
            del self._entries[key]
            self._changed.discard(key)
        return gone
