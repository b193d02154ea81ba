"""A Prometheus histogram, kept where the measured thing happens and read at a scrape.

The notifier times its deliveries with it (``streams.notifier.metrics``) and the store stage
its writes (``streams.stages``); ``streams.telemetry`` renders them.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable

__all__ = ["Histogram"]


class Histogram:
    """A Prometheus histogram: observations counted under fixed upper bounds, sum and count.

    Counts are kept per bucket and made cumulative when read, so an observation costs one
    bisection. A value equal to a bound counts in that bound's bucket (``le``: less or equal).

    >>> h = Histogram((0.1, 1.0))
    >>> for seconds in (0.05, 0.1, 0.5, 7.0):
    ...     h.observe(seconds)
    >>> h.cumulative(), h.count, h.sum
    ([(0.1, 2), (1.0, 3), (inf, 4)], 4, 7.65)
    """

    __slots__ = ("_counts", "bounds", "count", "sum")

    def __init__(self, bounds: Iterable[float]) -> None:
        self.bounds = tuple(float(b) for b in bounds)
        if not self.bounds:
            raise ValueError("a histogram needs at least one bucket bound")
        if not all(math.isfinite(b) for b in self.bounds):
            raise ValueError(f"bucket bounds must be finite (+Inf is implied), got {self.bounds}")
        if any(b >= c for b, c in zip(self.bounds, self.bounds[1:], strict=False)):
            raise ValueError(f"bucket bounds must increase strictly, got {self.bounds}")
        self._counts = [0] * (len(self.bounds) + 1)  # the last: above every bound (+Inf)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count ``value``; NaN is ignored (it would make the sum NaN for good)."""
        if math.isnan(value):
            return
        self._counts[bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.sum += value

    def add(self, other: Histogram) -> None:
        """Count ``other``'s observations in this one as well (same bounds)."""
        if other.bounds != self.bounds:
            raise ValueError(f"bounds differ: {self.bounds} and {other.bounds}")
        self._counts = [a + b for a, b in zip(self._counts, other._counts, strict=True)]
        self.count += other.count
        self.sum += other.sum

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it), ending with (+Inf, count)."""
        out, running = [], 0
        for bound, n in zip((*self.bounds, math.inf), self._counts, strict=True):
            running += n
            out.append((bound, running))
        return out
