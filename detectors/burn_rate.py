"""Budgets over event-time windows: sums per window and multi-window burn rates.

Both keep per-minute buckets in a fixed ring, so the state is bounded by the longest
window (6 h: 360 buckets of 8 bytes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

BUCKET_US = 60_000_000
MONTH_S = 30 * 86_400.0

# (short window s, long window s, burn-rate factor, severity), as in SRE error-budget alerting:
# 14.4x burns 2% of a 30-day budget in 1 h, 6x burns 5% in 6 h.
BURN_RATE_PAIRS: tuple[tuple[float, float, float, str], ...] = (
    (300.0, 3600.0, 14.4, "critical"),
    (1800.0, 21_600.0, 6.0, "error"),
)


class WindowSum:
    """Sum of a quantity over the last ``window_s`` seconds of event time.

    >>> w = WindowSum(window_s=120)
    >>> w.add(0, 5.0); w.add(60_000_000, 2.0); w.add(200_000_000, 1.0)
    >>> w.total(200_000_000)
    1.0
    """

    def __init__(self, window_s: float) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        self.window_s = window_s
        self._n = max(1, math.ceil(window_s * 1_000_000 / BUCKET_US))
        self._sums = np.zeros(self._n)
        self._minutes = np.full(self._n, -1, dtype=np.int64)

    def add(self, ts_us: int, amount: float) -> None:
        minute = ts_us // BUCKET_US
        slot = minute % self._n
        if self._minutes[slot] != minute:
            if self._minutes[slot] > minute:
                return  # older than the window: already expired
            self._minutes[slot] = minute
            self._sums[slot] = 0.0
        self._sums[slot] += amount

    def total(self, now_us: int, window_s: float | None = None) -> float:
        """Sum over the last ``window_s`` (default: the whole window) ending at ``now_us``."""
        span = self._n if window_s is None else max(1, math.ceil(window_s * 1e6 / BUCKET_US))
        now_minute = now_us // BUCKET_US
        live = (self._minutes > now_minute - span) & (self._minutes <= now_minute)
        return float(self._sums[live].sum())


@dataclass(frozen=True, slots=True)
class BurnVerdict:
    severity: str
    short_s: float
    long_s: float
    factor: float
    short_rate: float
    long_rate: float


class BurnRate:
    """Multi-window burn rate of a monthly cost budget.

    The burn rate over a window is spend in the window divided by the budget's even
    share for that window. A pair alarms only when both its short and long window
    exceed the factor: the long one proves it matters, the short one that it is
    still happening (so the alert resolves soon after the spend stops).

    >>> b = BurnRate(monthly_budget=720.0)  # 1 USD per hour
    >>> for minute in range(60):
    ...     b.add(minute * 60_000_000, 0.5)  # 30 USD per hour
    >>> b.verdict(59 * 60_000_000).severity
    'critical'
    """

    def __init__(self, monthly_budget: float) -> None:
        if monthly_budget <= 0:
            raise ValueError(f"monthly_budget must be > 0 USD, got {monthly_budget}")
        self.monthly_budget = monthly_budget
        self._spend = WindowSum(max(p[1] for p in BURN_RATE_PAIRS))

    def add(self, ts_us: int, cost_usd: float) -> None:
        self._spend.add(ts_us, cost_usd)

    def rate(self, now_us: int, window_s: float) -> float:
        allowed = self.monthly_budget * window_s / MONTH_S
        return self._spend.total(now_us, window_s) / allowed

    def verdict(self, now_us: int) -> BurnVerdict | None:
        """The most severe pair whose both windows burn faster than its factor, if any."""
        for short_s, long_s, factor, severity in BURN_RATE_PAIRS:
            short_rate = self.rate(now_us, short_s)
            long_rate = self.rate(now_us, long_s)
            if short_rate > factor and long_rate > factor:
                return BurnVerdict(severity, short_s, long_s, factor, short_rate, long_rate)
        return None
