"""A metric's level by time of day, so a daily cycle is not taken for drift.

Latency rises with load at peak hours; a workflow serving tenants in several time zones
sees its tokens follow the mix. Against one reference such a phase is a persistent shift
of 0.1-0.3 sd, which is what the level tests exist to find: a daily cycle of +-10-20%
opened an alert on every continuous metric about once a day (docs/detection.md).

:class:`HourProfile` keeps, per hour of the UTC day and apart for even and odd days, the
count and sum of a metric's values on its natural scale (and the sum of squares per
parity). Once it has seen ``MIN_SPAN_US`` of event time and at least ``MIN_PER_HOUR``
values in every hour, each hour's offset is its mean's distance from the overall mean,
shrunk towards 0 by ``SHRINK_SE`` standard errors (an hour whose mean is within its noise
gets none); the profile is worth using when the hours' pattern repeats from one day to
the next and some offset reaches ``MIN_EFFECT_SD`` of the values' sd. The caller then
subtracts each value's offset (:func:`at_times`, linear between the hours' midpoints)
before the tests see it, and starts the reference over on such values.

The profile learns from every value, shifted or not: a shift present at every hour moves
each bin's mean alike and leaves the offsets as they were, and one confined to some
hours is diluted by the days before it. Past ``MAX_VALUES`` the sums are halved, so the
profile follows a daily pattern that changes over weeks. Everything is one array of 103
floats (824 bytes): a worker tracks thousands of bundles with five continuous metrics each.
Two-hour bins (half the memory) followed a tenant mix that turns within a few hours less
well: 17 alerts on one day of a replay where hourly bins left 7.
"""

from __future__ import annotations

import math
from array import array
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from driftline.detectors._kernels import FloatArray

HOURS: Final = 24
HOUR_US: Final = 3_600_000_000
DAY_US: Final = 24 * HOUR_US
MIN_SPAN_US: Final = 48 * HOUR_US
MIN_PER_HOUR: Final = 30
SHRINK_SE: Final = 1.0
MIN_EFFECT_SD: Final = 0.1
MIN_REPEAT_CORRELATION: Final = 0.6
MAX_VALUES: Final = 1_000_000
# Batches this small are summed in Python (cheaper than numpy's per-call cost).
SMALL_BATCH: Final = 32
# The offsets in use, and the check whether to use them, are renewed every this many
# values.
REFRESH_VALUES: Final = 500
# Values beyond this are not learned (natural-scale values are logs or logits, far below;
# a square of a larger one would overflow the sums).
MAX_ABS_VALUE: Final = 1e100

# The one array: [parity][count, sum][bin], then per parity the sum of squares, then the
# scalars below.
SQUARES: Final = 4 * HOURS
FIRST, LAST, COUNT, CHECKED_AT, OFFSETS_AT = range(SQUARES + 2, SQUARES + 7)
SLOTS: Final = SQUARES + 7


def hours_of(times_us: NDArray[np.int64]) -> NDArray[np.intp]:
    """Hour (0-23) of the UTC day of event times in microseconds.

    >>> hours_of(np.array([0, 3_600_000_000 * 25 + 5])).tolist()
    [0, 1]
    """
    return ((np.asarray(times_us, dtype=np.int64) // HOUR_US) % HOURS).astype(np.intp)


def _offsets(counts: FloatArray, sums: FloatArray, squares: float, shrink_se: float) -> FloatArray:
    """Bin means minus the overall mean, shrunk by ``shrink_se`` standard errors (the
    pooled variance over ``counts``); 0 for a bin with fewer than 2 values."""
    total = float(counts.sum())
    if total < 2:
        return np.zeros(HOURS)
    overall = float(sums.sum()) / total
    var = max(squares / total - overall * overall, 0.0)
    seen = counts >= 2
    safe = np.where(seen, counts, 1.0)
    d = sums / safe - overall
    out = np.sign(d) * np.maximum(np.abs(d) - shrink_se * np.sqrt(var / safe), 0.0)
    return np.where(seen, out, 0.0)


def at_times(offsets: FloatArray, times_us: NDArray[np.int64]) -> FloatArray:
    """Per-bin ``offsets`` read at ``times_us``, linear between the bins' midpoints (the
    day wraps): a level that climbs through a bin is followed within it.

    >>> minutes = np.array([30, 90, 23 * 60 + 45])  # 00:30, 01:30, 23:45 (towards 0)
    >>> at_times(np.arange(24.0), minutes * 60_000_000).tolist()
    [0.0, 1.0, 17.25]
    """
    position = (np.asarray(times_us, dtype=np.int64) % DAY_US) / HOUR_US - 0.5
    below = np.floor(position)
    weight = position - below
    lo = below.astype(np.intp) % HOURS
    return (1.0 - weight) * offsets[lo] + weight * offsets[(lo + 1) % HOURS]


class HourProfile:
    """Per-bin sums of one metric's values (apart for even and odd days), and the
    offsets they make.

    >>> rng = np.random.default_rng(1)
    >>> t = np.arange(0, 3 * 86_400, 10) * 1_000_000  # three days, a value every 10 s
    >>> hour = t / 3.6e9 % 24
    >>> y = 6.0 + 0.2 * np.sin(2 * np.pi * hour / 24) + 0.5 * rng.normal(size=t.shape[0])
    >>> p = HourProfile()
    >>> p.learn(t[: t.shape[0] // 2], y[: t.shape[0] // 2])
    >>> p.worth_using()  # a day and a half: not yet
    False
    >>> p.learn(t[t.shape[0] // 2 :], y[t.shape[0] // 2 :])
    >>> p.worth_using(), round(float(p.offsets()[6]), 2)  # 06:00-07:00, near sin's peak
    (True, 0.17)
    """

    __slots__ = ("_cells", "_offsets", "active")

    def __init__(self) -> None:
        self._cells = array("d", bytes(8 * SLOTS))
        self._cells[FIRST] = -1.0
        self._cells[LAST] = -1.0
        # Whether the caller subtracts the offsets (once worth using, for good: turning
        # them off again would move the corrected values by as much).
        self.active = False
        self._offsets: FloatArray | None = None  # in use since OFFSETS_AT values

    @property
    def n(self) -> float:
        return self._cells[COUNT]

    @property
    def span_us(self) -> float:
        return self._cells[LAST] - self._cells[FIRST] if self._cells[FIRST] >= 0 else 0.0

    def _view(self) -> FloatArray:
        return np.frombuffer(self._cells, dtype=np.float64)

    def learn(self, times_us: NDArray[np.int64], values: FloatArray) -> None:
        if values.shape[0] <= SMALL_BATCH:
            self._learn_few(times_us.tolist(), values.tolist())
            return
        keep = np.abs(values) <= MAX_ABS_VALUE  # NaN compares False
        if not keep.all():
            times_us, values = times_us[keep], values[keep]
        if not values.shape[0]:
            return
        times_us = np.asarray(times_us, dtype=np.int64)
        parity = (times_us // DAY_US) % 2
        slot = parity * HOURS + hours_of(times_us)
        width = 2 * HOURS
        add = np.stack(
            [
                np.bincount(slot, minlength=width).reshape(2, HOURS),
                np.bincount(slot, values, width).reshape(2, HOURS),
            ],
            axis=1,
        )  # [parity][count, sum][bin], as the cells
        view = self._view()
        view[:SQUARES] += add.reshape(-1)
        view[SQUARES : SQUARES + 2] += np.bincount(parity, values * values, 2)
        self._seen(float(times_us.min()), float(times_us.max()), float(values.shape[0]))

    def _learn_few(self, times: list[int], values: list[float]) -> None:
        cells = self._cells
        lo = hi = -1.0
        count = 0
        for t, x in zip(times, values, strict=True):
            if not abs(x) <= MAX_ABS_VALUE:  # NaN, infinities, squares that overflow
                continue
            parity = (t // DAY_US) % 2
            k = parity * 2 * HOURS + (t // HOUR_US) % HOURS
            cells[k] += 1.0
            cells[k + HOURS] += x
            cells[SQUARES + parity] += x * x
            lo = t if lo < 0 else min(lo, t)
            hi = max(hi, t)
            count += 1
        if count:
            self._seen(float(lo), float(hi), float(count))

    def _seen(self, lo: float, hi: float, count: float) -> None:
        cells = self._cells
        cells[FIRST] = lo if cells[FIRST] < 0 else min(cells[FIRST], lo)
        cells[LAST] = max(cells[LAST], hi)
        cells[COUNT] += count
        if cells[COUNT] > MAX_VALUES:
            view = self._view()
            view[: SQUARES + 2] *= 0.5
            view[[COUNT, CHECKED_AT, OFFSETS_AT]] *= 0.5

    def _parts(self) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Counts and sums per [parity][bin], sums of squares per parity."""
        view = self._view()
        both = view[:SQUARES].reshape(2, 2, HOURS)
        return both[:, 0], both[:, 1], view[SQUARES : SQUARES + 2]

    def offsets(self) -> FloatArray:
        """Each bin's mean minus the overall mean, shrunk by ``SHRINK_SE`` of its
        standard error (0 for a bin with too few values)."""
        counts, sums, squares = self._parts()
        return _offsets(counts.sum(axis=0), sums.sum(axis=0), float(squares.sum()), SHRINK_SE)

    def offsets_in_use(self) -> FloatArray:
        """:meth:`offsets` as of the latest ``REFRESH_VALUES`` values (kept in the state,
        so a restored profile corrects exactly as the one it was taken from)."""
        cells = self._cells
        if self._offsets is None or cells[COUNT] - cells[OFFSETS_AT] >= REFRESH_VALUES:
            self._offsets = self.offsets()
            cells[OFFSETS_AT] = cells[COUNT]
        return self._offsets

    def due_for_check(self) -> bool:
        """Whether ``REFRESH_VALUES`` values have come since the latest check (a stream
        without a daily cycle is not re-tested at every batch, for ever)."""
        cells = self._cells
        if cells[COUNT] - cells[CHECKED_AT] < REFRESH_VALUES:
            return False
        cells[CHECKED_AT] = cells[COUNT]
        return True

    def worth_using(self) -> bool:
        """Seen long and full enough, the cycle repeating from day to day (the even and
        the odd days' bin means correlate by ``MIN_REPEAT_CORRELATION`` or more: noise,
        however autocorrelated within an hour, does not repeat), and some bin off by
        ``MIN_EFFECT_SD`` after shrinkage."""
        if self.span_us < MIN_SPAN_US:
            return False
        counts, sums, squares = self._parts()
        if counts.sum(axis=0).min() < MIN_PER_HOUR:
            return False
        even = _offsets(counts[0], sums[0], float(squares[0]), 0.0)
        odd = _offsets(counts[1], sums[1], float(squares[1]), 0.0)
        if even.std() == 0.0 or odd.std() == 0.0:
            return False
        if float(np.corrcoef(even, odd)[0, 1]) < MIN_REPEAT_CORRELATION:
            return False
        n, total = float(counts.sum()), float(sums.sum())
        sd = math.sqrt(max(float(squares.sum()) / n - (total / n) ** 2, 0.0))
        return bool(np.abs(self.offsets()).max() >= MIN_EFFECT_SD * max(sd, 1e-12))

    def to_state(self) -> dict[str, Any]:
        return {
            "cells": self._view().copy(),
            "active": self.active,
            "offsets": None if self._offsets is None else self._offsets.copy(),
        }

    @classmethod
    def from_state(cls, state: Any) -> HourProfile:
        if not isinstance(state, dict):
            raise ValueError("an hour profile is an object")
        cells = state.get("cells")
        if (
            not isinstance(cells, np.ndarray)
            or cells.shape != (SLOTS,)
            or cells.dtype != np.float64
            or not np.all(np.isfinite(cells))
        ):
            raise ValueError(f"cells: expected {SLOTS} finite float64")
        counts = cells[:SQUARES].reshape(2, 2, HOURS)[:, 0]
        if (
            np.any(counts < 0)
            or np.any(cells[SQUARES : SQUARES + 2] < 0)
            or not (cells[FIRST] == cells[LAST] == -1.0 or 0.0 <= cells[FIRST] <= cells[LAST])
            or not 0.0 <= cells[CHECKED_AT] <= cells[COUNT] <= MAX_VALUES
            or not 0.0 <= cells[OFFSETS_AT] <= cells[COUNT]
        ):
            raise ValueError("cells: counts, times or marks out of range")
        active = state.get("active")
        if not isinstance(active, bool):
            raise ValueError("active: expected a boolean")
        offsets = state.get("offsets")
        if offsets is not None and (
            not isinstance(offsets, np.ndarray)
            or offsets.shape != (HOURS,)
            or offsets.dtype != np.float64
            or not np.all(np.isfinite(offsets))
        ):
            raise ValueError(f"offsets: expected {HOURS} finite float64 or null")
        out = cls()
        out._cells = array("d", np.ascontiguousarray(cells).tobytes())
        out.active = active
        out._offsets = None if offsets is None else offsets.copy()
        return out
