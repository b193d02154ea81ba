"""Bundles serving a workflow without a place (``detectors.max_bundles_per_workflow``).

Each is remembered as a :class:`Sighting` (first and last call, calls seen) so that the
``tracked_bundles`` warning is a *state* condition: it holds while a bundle left out still
serves, judged by that bundle's own gaps between calls, not by the time since the last
one. A fallback model answering a few calls an hour is left out for as long as it
answers; counting the warning clear from its last call resolved and reopened it every few
minutes (214 opens in four days of one A/B workflow's replay).

A bundle counts as retired after ``RETIRED_GAPS`` of its own mean gaps without a call, or
``detectors.canary_active_s`` if that is longer: the rule that retires a tracked bundle's
drift alerts (:mod:`.drift`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# A bundle is retired after this many of its own mean gaps between calls without one (a
# Poisson stream's gap is that long with probability e^-50; at a night's fifth of the mean
# rate, e^-10: one gap in 22,000).
RETIRED_GAPS: Final = 50
# Bundles left out remembered per workflow; beyond it the one seen least recently is
# forgotten (the warning lists at most a few offenders anyway).
MAX_SIGHTINGS: Final = 16


@dataclass(slots=True)
class Sighting:
    first_ts: int
    last_ts: int
    n_events: int


def retired_after_us(first_ts: int, last_ts: int, n_events: int, active_us: float) -> float:
    """How long without a call a bundle seen ``n_events`` times between ``first_ts`` and
    ``last_ts`` counts as retired.

    >>> retired_after_us(0, 0, 1, 600e6), retired_after_us(0, 99 * 60_000_000, 100, 600e6)
    (600000000.0, 3000000000.0)
    """
    mean_gap = (last_ts - first_ts) / max(n_events - 1, 1)
    return max(active_us, RETIRED_GAPS * mean_gap)


def record(
    sightings: dict[str, Sighting], bundle_id: str, first: int, last: int, n: int
) -> Sighting:
    """Note ``n`` calls of ``bundle_id`` (left out) between ``first`` and ``last``."""
    seen = sightings.get(bundle_id)
    if seen is not None:
        seen.first_ts = min(seen.first_ts, first)
        seen.last_ts = max(seen.last_ts, last)
        seen.n_events += n
        return seen
    if len(sightings) >= MAX_SIGHTINGS:
        del sightings[min(sightings, key=lambda b: (sightings[b].last_ts, b))]
    seen = sightings[bundle_id] = Sighting(first, last, n)
    return seen


def serving(sightings: dict[str, Sighting], now: int, active_us: float) -> bool:
    """Whether a bundle left out still serves at ``now``; forgets those retired.

    >>> seen = {}
    >>> _ = record(seen, "fallback", 0, 3_000_000_000, 11)  # a call every 5 minutes
    >>> serving(seen, 3_000_000_000 + 3_600_000_000, 600e6)  # an hour without one
    True
    >>> serving(seen, 3_000_000_000 + 16_000_000_000, 600e6), seen
    (False, {})
    """
    for bundle_id in [
        b
        for b, s in sightings.items()
        if now - s.last_ts > retired_after_us(s.first_ts, s.last_ts, s.n_events, active_us)
    ]:
        del sightings[bundle_id]
    return bool(sightings)
