"""A metric's level by hour of the day, so a daily cycle is not taken for drift.

Latency rises with load at peak hours; a workflow serving tenants in several time zones
sees its tokens follow the mix. Against one reference such a phase is a persistent shift
of 0.1-0.3 sd, which is what the level tests exist to find: a daily cycle of +-10-20%
opened an alert on every continuous metric about once a day (docs/detection.md).

:class:`HourProfile` keeps, per UTC hour, the count, sum and sum of squares of a metric's
values on its natural scale. Once it has seen ``MIN_SPAN_US`` of event time and at least
``MIN_PER_HOUR`` values in every hour, each hour's offset is its mean's distance from the
overall mean, shrunk towards 0 by ``SHRINK_SE`` standard errors (an hour whose mean is
within its noise gets none); the profile is worth using when the hours' pattern repeats
from one day to the next and some offset reaches ``MIN_EFFECT_SD`` of the values' sd. The
caller then subtracts each value's offset (:func:`at_times`, linear between the hours)
before the tests see it, and starts the reference over on such values.

The profile learns from every value, shifted or not: a shift present at every hour moves
each hour's mean alike and leaves the offsets as they were, and one confined to some
hours is diluted by the days before it. Past ``MAX_VALUES`` the sums are halved, so the
profile follows a daily pattern that changes over weeks.
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
MIN_SPAN_US: Final = 48 * HOUR_US
MIN_PER_HOUR: Final = 50
SHRINK_SE: Final = 1.0
MIN_EFFECT_SD: Final = 0.1
MAX_VALUES: Final = 1_000_000
MIN_REPEAT_CORRELATION: Final = 0.6
DAY_US: Final = HOURS * HOUR_US
SLOTS: Final = 2 * 3 * HOURS
# Batches this small are summed in Python (cheaper than numpy's per-call cost).
SMALL_BATCH: Final = 32
# The offsets in use, and the check whether to use them, are renewed every this many
# values.
REFRESH_VALUES: Final = 500
# Values beyond this are not learned (natural-scale values are logs or logits, far below;
# a square of a larger one would overflow the sums).
MAX_ABS_VALUE: Final = 1e100


def hours_of(times_us: NDArray[np.int64]) -> NDArray[np.intp]:
    """UTC hour (0-23) of event times in microseconds.

    >>> hours_of(np.array([0, 3_600_000_000 * 25 + 5])).tolist()
    [0, 1]
    """
    return ((np.asarray(times_us, dtype=np.int64) // HOUR_US) % HOURS).astype(np.intp)


def _offsets(sums: FloatArray, shrink_se: float) -> FloatArray:
    """Hour means minus the overall mean from ``sums`` (count, sum, squares per hour),
    shrunk by ``shrink_se`` standard errors; 0 for an hour with fewer than 2 values."""
    n, s1, s2 = sums
    seen = n >= 2
    safe = np.where(seen, n, 1.0)
    means = s1 / safe
    var = np.maximum(s2 / safe - means * means, 0.0)
    d = means - s1.sum() / max(n.sum(), 1.0)
    out = np.sign(d) * np.maximum(np.abs(d) - shrink_se * np.sqrt(var / safe), 0.0)
    return np.where(seen, out, 0.0)


def at_times(offsets: FloatArray, times_us: NDArray[np.int64]) -> FloatArray:
    """Per-hour ``offsets`` read at ``times_us``, linear between the hours' midpoints (the
    day wraps): a level that climbs through an hour is followed within it.

    >>> minutes = np.array([30, 90, 23 * 60 + 45])  # 00:30, 01:30, 23:45 (towards 0)
    >>> at_times(np.arange(24.0), minutes * 60_000_000).tolist()
    [0.0, 1.0, 17.25]
    """
    position = (np.asarray(times_us, dtype=np.int64) % (HOURS * HOUR_US)) / HOUR_US - 0.5
    below = np.floor(position)
    weight = position - below
    lo = below.astype(np.intp) % HOURS
    return (1.0 - weight) * offsets[lo] + weight * offsets[(lo + 1) % HOURS]


class HourProfile:
    """Per-hour sums of one metric's values (apart for even and odd days), and the
    offsets they make.

    >>> rng = np.random.default_rng(1)
    >>> t = np.arange(0, 3 * 86_400, 10) * 1_000_000  # three days, a value every 10 s
    >>> hour = hours_of(t)
    >>> y = 6.0 + 0.2 * np.sin(2 * np.pi * hour / 24) + 0.5 * rng.normal(size=t.shape[0])
    >>> p = HourProfile()
    >>> p.learn(t[: t.shape[0] // 2], y[: t.shape[0] // 2])
    >>> p.worth_using()  # a day and a half: not yet
    False
    >>> p.learn(t[t.shape[0] // 2 :], y[t.shape[0] // 2 :])
    >>> p.worth_using(), round(float(p.offsets()[6]), 2)  # sin peaks at 06:00
    (True, 0.17)
    """

    __slots__ = (
        "_flat",
        "_offsets",
        "_offsets_at",
        "active",
        "checked_at",
        "first_us",
        "last_us",
        "n",
    )

    def __init__(self) -> None:
        # [even or odd day][count, sum, sum of squares][hour], flat and unboxed (1.2 KB):
        # a worker's monitor feeds a few values at a time, where a Python loop beats
        # numpy's per-call cost.
        self._flat = array("d", bytes(8 * SLOTS))
        self.n = 0.0  # values in the sums (halved with them)
        self.first_us = -1
        self.last_us = -1
        # Whether the caller subtracts the offsets (once worth using, for good: turning
        # them off again would move the corrected values by as much).
        self.active = False
        # ``n`` at the latest worth_using() check; the offsets in use, and ``n`` then.
        self.checked_at = 0.0
        self._offsets: FloatArray | None = None
        self._offsets_at = 0.0

    @property
    def sums(self) -> FloatArray:
        return np.frombuffer(self._flat, dtype=np.float64).reshape(2, 3, HOURS).copy()

    def learn(self, times_us: NDArray[np.int64], values: FloatArray) -> None:
        if values.shape[0] <= SMALL_BATCH:
            self._learn_few(times_us.tolist(), values.tolist())
            return
        finite = np.abs(values) <= MAX_ABS_VALUE  # NaN compares False
        if not finite.all():
            times_us, values = times_us[finite], values[finite]
        if not values.shape[0]:
            return
        times_us = np.asarray(times_us, dtype=np.int64)
        slot = ((times_us // DAY_US) % 2) * HOURS + hours_of(times_us)
        width = 2 * HOURS
        add = np.stack(
            [
                np.bincount(slot, minlength=width).reshape(2, HOURS),
                np.bincount(slot, values, width).reshape(2, HOURS),
                np.bincount(slot, values * values, width).reshape(2, HOURS),
            ],
            axis=1,
        )  # [parity][count, sum, squares][hour], as the sums
        np.frombuffer(self._flat, dtype=np.float64)[:] += add.reshape(-1)
        self._seen(int(times_us.min()), int(times_us.max()), float(values.shape[0]))

    def _learn_few(self, times: list[int], values: list[float]) -> None:
        flat = self._flat
        lo = hi = -1
        count = 0
        for t, x in zip(times, values, strict=True):
            if not abs(x) <= MAX_ABS_VALUE:  # NaN, infinities, squares that overflow
                continue
            k = ((t // DAY_US) % 2) * 3 * HOURS + (t // HOUR_US) % HOURS
            flat[k] += 1.0
            flat[k + HOURS] += x
            flat[k + 2 * HOURS] += x * x
            lo = t if lo < 0 else min(lo, t)
            hi = max(hi, t)
            count += 1
        if count:
            self._seen(lo, hi, float(count))

    def _seen(self, lo: int, hi: int, count: float) -> None:
        self.first_us = lo if self.first_us < 0 else min(self.first_us, lo)
        self.last_us = max(self.last_us, hi)
        self.n += count
        if self.n > MAX_VALUES:
            np.frombuffer(self._flat, dtype=np.float64)[:] *= 0.5
            self.n *= 0.5
            self.checked_at *= 0.5
            self._offsets_at *= 0.5

    def offsets(self) -> FloatArray:
        """Each hour's mean minus the overall mean, shrunk by ``SHRINK_SE`` of its
        standard error (0 for an hour with too few values)."""
        return _offsets(self.sums.sum(axis=0), SHRINK_SE)

    def offsets_in_use(self) -> FloatArray:
        """:meth:`offsets` as of the latest ``REFRESH_VALUES`` values (kept in the state,
        so a restored profile corrects exactly as the one it was taken from)."""
        if self._offsets is None or self.n - self._offsets_at >= REFRESH_VALUES:
            self._offsets = self.offsets()
            self._offsets_at = self.n
        return self._offsets

    def due_for_check(self) -> bool:
        """Whether ``REFRESH_VALUES`` values have come since the latest check (a stream
        without a daily cycle is not re-tested at every batch, for ever)."""
        if self.n - self.checked_at < REFRESH_VALUES:
            return False
        self.checked_at = self.n
        return True

    def worth_using(self) -> bool:
        """Seen long and full enough, the cycle repeating from day to day (the even and
        the odd days' hour means correlate by ``MIN_REPEAT_CORRELATION`` or more: noise,
        however autocorrelated within an hour, does not repeat), and some hour off by
        ``MIN_EFFECT_SD`` after shrinkage."""
        if self.last_us - self.first_us < MIN_SPAN_US:
            return False
        sums = self.sums
        both = sums.sum(axis=0)
        if both[0].min() < MIN_PER_HOUR:
            return False
        even, odd = _offsets(sums[0], 0.0), _offsets(sums[1], 0.0)
        if even.std() == 0.0 or odd.std() == 0.0:
            return False
        if float(np.corrcoef(even, odd)[0, 1]) < MIN_REPEAT_CORRELATION:
            return False
        n, s1, s2 = (float(v) for v in both.sum(axis=1))
        sd = math.sqrt(max(s2 / n - (s1 / n) ** 2, 0.0))
        return bool(np.abs(self.offsets()).max() >= MIN_EFFECT_SD * max(sd, 1e-12))

    def to_state(self) -> dict[str, Any]:
        return {
            "sums": self.sums,
            "first_us": self.first_us,
            "last_us": self.last_us,
            "active": self.active,
            "checked_at": self.checked_at,
            "offsets": None if self._offsets is None else self._offsets.copy(),
            "offsets_at": self._offsets_at,
        }

    @classmethod
    def from_state(cls, state: Any) -> HourProfile:
        if not isinstance(state, dict):
            raise ValueError("an hour profile is an object")
        sums = state.get("sums")
        if (
            not isinstance(sums, np.ndarray)
            or sums.shape != (2, 3, HOURS)
            or sums.dtype != np.float64
            or not np.all(np.isfinite(sums))
            or np.any(sums[:, 0] < 0)
            or np.any(sums[:, 2] < 0)
        ):
            raise ValueError(f"sums: expected finite (2, 3, {HOURS}) float64, counts >= 0")
        first, last = state.get("first_us"), state.get("last_us")
        for name, v in (("first_us", first), ("last_us", last)):
            if not isinstance(v, int) or isinstance(v, bool) or v < -1:
                raise ValueError(f"{name}: expected an integer >= -1")
        active = state.get("active")
        if not isinstance(active, bool):
            raise ValueError("active: expected a boolean")
        numbers = [state.get(k) for k in ("checked_at", "offsets_at")]
        if not all(isinstance(v, float) and 0.0 <= v <= MAX_VALUES for v in numbers):
            raise ValueError("checked_at, offsets_at: expected counts")
        offsets = state.get("offsets")
        if offsets is not None and (
            not isinstance(offsets, np.ndarray)
            or offsets.shape != (HOURS,)
            or offsets.dtype != np.float64
            or not np.all(np.isfinite(offsets))
        ):
            raise ValueError(f"offsets: expected {HOURS} finite float64 or null")
        out = cls()
        out.active = active
        out._flat = array("d", np.ascontiguousarray(sums, dtype=np.float64).tobytes())
        out.n = float(sums[:, 0].sum())
        out.first_us, out.last_us = int(first), int(last)  # type: ignore[arg-type]
        out.checked_at, out._offsets_at = numbers  # type: ignore[assignment]
        out._offsets = None if offsets is None else offsets.copy()
        return out
