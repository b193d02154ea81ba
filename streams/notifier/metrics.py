"""What a notifier counts about its own deliveries, for the worker's ``/metrics``.

The notifier is where a page is sent, so it is where the delivery is counted by route: the
paging stage and the pipeline alerts each hold a notifier, and the exporter
(``streams.telemetry``) reads both at a scrape. Nothing here does I/O.

:attr:`DeliveryMetrics.deliveries` counts delivery records by route and outcome as the caller
gets them (from :meth:`Notifier.deliver` and :meth:`Notifier.take_late_records`), so their sum
over routes is what the stage has always counted by outcome (``pages.<outcome>``).

Routes are the configured ones (``default``, ``pagerduty[0]``, ``webhook[1]``...), so the route
label is a bounded set; a record that reached no route (``unrouted``, a malformed transition)
counts under :data:`NO_ROUTE`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Final

__all__ = ["NO_ROUTE", "DeliveryMetrics", "route_of"]

NO_ROUTE: Final = "none"


def route_of(record: Mapping[str, Any]) -> str:
    """The route name of a delivery record (its ``target`` is ``<route>@<host>``).

    >>> route_of({"target": "pagerduty[0]@events.pagerduty.com"}), route_of({"target": ""})
    ('pagerduty[0]', 'none')
    """
    route = str(record.get("target") or "").rpartition("@")[0]
    return route or NO_ROUTE


class DeliveryMetrics:
    """A notifier's counts, by route (see the module's docstring)."""

    __slots__ = ("deliveries",)

    def __init__(self) -> None:
        self.deliveries: Counter[tuple[str, str]] = Counter()  # (route, outcome)

    def count(self, records: Iterable[Mapping[str, Any]]) -> None:
        for record in records:
            self.deliveries[route_of(record), str(record["outcome"])] += 1
