"""Event time per workflow, advancing with bounded forward skew.

Each workflow has its own clock: the latest event time of its own records, reached by
steps of at most ``max_step_us`` between consecutive record times. A record dated beyond
such a gap (a client with a broken clock, a span dated 2100) does not move the clock, so
it resolves nothing, and it moves nobody else's clock at all. A real gap (traffic
resuming after an idle hour) is crossed once two consecutive steps (two
:meth:`Monitor.process` calls) both saw records beyond it: the clock then moves to the
earliest time both saw.

A workflow with no traffic of its own follows the *fleet clock*, the lower median of
every workflow's clock (one far-ahead workflow cannot move a median), so its alerts
still resolve when their condition is time-based; see :func:`fleet_time`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(slots=True)
class WorkflowClock:
    """One workflow's event-time clock (microseconds); ``ahead`` is the first time beyond
    a gap in the previous step (None: there was none).

    >>> clock = WorkflowClock()
    >>> clock.step([1_000, 1_050], max_step_us=100), clock.now
    (True, 1050)
    >>> clock.step([1_100, 10**12], max_step_us=100), clock.now  # one far-future record
    (True, 1100)
    >>> clock.step([1_120, 1_130], max_step_us=100), clock.now  # the next step disagrees
    (True, 1130)
    >>> clock.step([5_000, 5_010], max_step_us=100), clock.now  # traffic after a gap ...
    (False, 1130)
    >>> clock.step([5_020, 5_030], max_step_us=100), clock.now  # ... confirmed
    (True, 5030)
    """

    now: int = 0
    ahead: int | None = None

    def step(self, times: list[int], max_step_us: int, floor: int = 0) -> bool:
        """Advance along ``times`` (one step's record times, any order).

        ``floor`` bounds a new clock's first value (the fleet clock plus one step), so a
        workflow whose first record is far ahead does not start there. Returns whether
        the clock moved.
        """
        if not times:
            return False
        ordered = np.sort(np.asarray(times, dtype=np.int64))
        before = self.now
        if self.now == 0:
            first = int(ordered[0])
            self.now = min(first, floor + max_step_us) if floor else first
        previous_ahead, self.ahead = self.ahead, None
        rest = ordered[ordered > self.now]
        while rest.shape[0]:
            gaps = np.flatnonzero(np.diff(rest, prepend=self.now) > max_step_us)
            if not gaps.shape[0]:
                self.now = int(rest[-1])
                break
            if gaps[0] > 0:
                self.now = int(rest[gaps[0] - 1])
            beyond = int(rest[gaps[0]])
            if previous_ahead is None:
                self.ahead = beyond
                break
            # Two steps saw records beyond the gap: the time is at least the earlier one.
            self.now = max(self.now, min(previous_ahead, beyond))
            previous_ahead = None
            rest = rest[rest > self.now]
        return self.now != before


def fleet_time(clocks: list[int]) -> int:
    """The lower median of the workflows' clocks: what an idle workflow's clock follows.

    >>> fleet_time([10, 12, 4_102_444_800_000_000]), fleet_time([7]), fleet_time([])
    (12, 7, 0)
    >>> fleet_time([10, 4_102_444_800_000_000])  # two workflows: the earlier one
    10
    """
    if not clocks:
        return 0
    ordered = sorted(clocks)
    return ordered[(len(ordered) - 1) // 2]
