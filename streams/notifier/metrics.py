"""What a notifier measures about its own deliveries, for the worker's ``/metrics``.

The notifier is where a page is sent, so it is where the delivery is counted by route and
timed: the paging stage and the pipeline alerts each hold a notifier, and the exporter
(``streams.telemetry``) reads both at a scrape. Nothing here does I/O; an observation is a few
additions on the event loop.

- :attr:`DeliveryMetrics.deliveries`: delivery records by route and outcome, counted as the
  caller gets them (from :meth:`Notifier.deliver` and :meth:`Notifier.take_late_records`), so
  their sum over routes is what the stage has always counted by outcome (``pages.<outcome>``);
- :attr:`DeliveryMetrics.send_seconds`: each HTTP attempt's time, by route and outcome;
- :attr:`DeliveryMetrics.event_to_accepted_seconds`: from the time of the event that raised an
  alert transition (its ``event_ts``) to the page being accepted, by route.

Routes are the configured ones (``default``, ``pagerduty[0]``, ``webhook[1]``...), so the route
label is a bounded set; a record that reached no route (``unrouted``, a malformed transition)
counts under :data:`NO_ROUTE`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Final

from driftline.streams.histogram import Histogram

__all__ = [
    "DELIVERY_BUCKETS_S",
    "EVENT_TO_ACCEPTED_BUCKETS_S",
    "NO_ROUTE",
    "DeliveryMetrics",
    "Histogram",
    "route_of",
]

NO_ROUTE: Final = "none"
# An HTTP exchange with PagerDuty or a webhook: a few ms on a LAN, about 0.1-0.5 s over the
# internet, up to the 10 s per-attempt timeout (notifier.DEFAULT_TIMEOUT_S) when it hangs.
DELIVERY_BUCKETS_S: Final = (
    *(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
    *(1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
# An event to its page: collector export, trace assembly (a trace without its root closes after
# streams.trace_timeout_s), batching, detection and delivery; retries can take minutes.
EVENT_TO_ACCEPTED_BUCKETS_S: Final = (
    *(0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
    *(120.0, 300.0, 600.0, 1800.0, 3600.0),
)


def route_of(record: Mapping[str, Any]) -> str:
    """The route name of a delivery record (its ``target`` is ``<route>@<host>``).

    >>> route_of({"target": "pagerduty[0]@events.pagerduty.com"}), route_of({"target": ""})
    ('pagerduty[0]', 'none')
    """
    route = str(record.get("target") or "").rpartition("@")[0]
    return route or NO_ROUTE


class DeliveryMetrics:
    """A notifier's counts and timings, by route (see the module's docstring)."""

    __slots__ = ("deliveries", "event_to_accepted_seconds", "send_seconds")

    def __init__(self) -> None:
        self.deliveries: Counter[tuple[str, str]] = Counter()  # (route, outcome)
        self.send_seconds: dict[tuple[str, str], Histogram] = {}  # (route, outcome)
        self.event_to_accepted_seconds: dict[str, Histogram] = {}  # route

    def count(self, records: Iterable[Mapping[str, Any]]) -> None:
        for record in records:
            self.deliveries[route_of(record), str(record["outcome"])] += 1

    def observe_send(self, route: str, outcome: str, seconds: float) -> None:
        found = self.send_seconds.get((route, outcome))
        if found is None:
            found = self.send_seconds[route, outcome] = Histogram(DELIVERY_BUCKETS_S)
        found.observe(seconds)

    def observe_accepted(self, route: str, event_us: int, accepted_s: float) -> None:
        """A page accepted at ``accepted_s`` (Unix time) for an event at ``event_us``.

        A transition without an event time (0) is not observed; an event stamped after its
        page (clocks of the traced services ahead of the worker's) counts as 0 s.
        """
        if event_us <= 0:
            return
        found = self.event_to_accepted_seconds.get(route)
        if found is None:
            found = self.event_to_accepted_seconds[route] = Histogram(EVENT_TO_ACCEPTED_BUCKETS_S)
        found.observe(max(0.0, accepted_s - event_us / 1_000_000))
