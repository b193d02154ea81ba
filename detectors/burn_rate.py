"""Budgets over event-time windows: sums per window and multi-window burn rates.

Both keep per-minute buckets in a fixed ring, so the state is bounded by the longest
window (6 h: 360 buckets of 16 bytes).

Recovery (``shift_holds``) uses a lower bar than the alarm, as a Datadog monitor's
recovery threshold does: a budget alert stays open while the spend is above
``RECOVERY`` of the limit, so a spend hovering at the limit does not flap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Self

import numpy as np

from driftline.detectors.base import STATE_VERSION, Field, check_array, decode

BUCKET_US = 60_000_000
MONTH_S = 30 * 86_400.0
# A smaller monthly budget's share of the shortest window rounds to nothing (a division
# by zero once, found by feeding 1e-320 through the CLI); config holds to the same bound.
MIN_MONTHLY_BUDGET_USD = 1e-6
# Stay-open bar as a share of the alarm bar (limit, or burn-rate factor).
RECOVERY = 0.8

# (short window s, long window s, burn-rate factor, severity), as in SRE error-budget alerting:
# 14.4x burns 2% of a 30-day budget in 1 h, 6x burns 5% in 6 h.
BURN_RATE_PAIRS: tuple[tuple[float, float, float, str], ...] = (
    (300.0, 3600.0, 14.4, "critical"),
    (1800.0, 21_600.0, 6.0, "error"),
)


class WindowSum:
    """Sum of a quantity over the last ``window_s`` seconds of event time.

    ``limit`` (optional) is the alarm bar the caller compares :meth:`total` with;
    :meth:`shift_holds` needs it.

    >>> w = WindowSum(window_s=120, limit=4.0)
    >>> w.add(0, 5.0); w.add(60_000_000, 2.0); w.add(200_000_000, 1.0)
    >>> w.total(200_000_000), w.shift_holds()
    (1.0, False)
    """

    def __init__(self, window_s: float, limit: float | None = None) -> None:
        if not 0 < window_s <= 366 * 86_400:
            raise ValueError(f"window_s must be in (0, 1 year], got {window_s}")
        if limit is not None and not limit > 0:
            raise ValueError(f"limit must be > 0, got {limit}")
        self.window_s = window_s
        self.limit = limit
        self._n = max(1, math.ceil(window_s * 1_000_000 / BUCKET_US))
        self._sums = np.zeros(self._n)
        self._minutes = np.full(self._n, -1, dtype=np.int64)
        self._latest = 0  # latest event time added (microseconds)

    def add(self, ts_us: int, amount: float) -> None:
        self._latest = max(self._latest, int(ts_us))
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

    def shift_holds(self, now_us: int | None = None) -> bool:
        """Whether the window's sum is still above ``RECOVERY`` of ``limit`` at ``now_us``.

        ``now_us`` defaults to the latest event time added. False without a limit.
        """
        if self.limit is None:
            return False
        now = self._latest if now_us is None else now_us
        return self.total(now) > RECOVERY * self.limit

    def rebaseline(self) -> None:
        """Nothing to relearn: a budget's limit is configuration, not a learned reference."""

    def to_state(self) -> dict[str, Any]:
        return {
            "class": "WindowSum",
            "version": STATE_VERSION,
            "window_s": float(self.window_s),
            "limit": self.limit,
            "sums": self._sums.copy(),
            "minutes": self._minutes.copy(),
            "latest": self._latest,
        }

    @classmethod
    def from_state(cls, state: Any) -> Self:
        name = "WindowSum"
        if not isinstance(state, dict) or state.get("class") != name:
            raise ValueError(f"not a {name} state")
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"{name} state version {state.get('version')!r} unsupported")
        window_s = decode(state, "window_s", Field("float", lo=0.0), name)
        limit = decode(state, "limit", Field("float", lo=0.0, optional=True), name)
        try:
            out = cls(window_s, limit)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from exc
        spec = Field("array")
        sums = check_array(state.get("sums"), f"{name}.sums", "float64", 1, spec)
        minutes = check_array(state.get("minutes"), f"{name}.minutes", "int64", 1, spec)
        if sums.shape != (out._n,) or minutes.shape != (out._n,):
            raise ValueError(f"{name}.sums/minutes: expected {out._n} buckets each")
        out._sums, out._minutes = sums, minutes
        out._latest = decode(state, "latest", Field("int", lo=0), name)
        return out


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
    >>> b.verdict(59 * 60_000_000).severity, b.shift_holds()
    ('critical', True)
    """

    def __init__(self, monthly_budget: float) -> None:
        if not MIN_MONTHLY_BUDGET_USD <= monthly_budget < math.inf:
            least = MIN_MONTHLY_BUDGET_USD
            raise ValueError(f"monthly_budget must be at least {least} USD, got {monthly_budget}")
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

    def shift_holds(self, now_us: int | None = None) -> bool:
        """Whether some pair's *short* window still burns above ``RECOVERY`` of its factor.

        Only the short window: the long one keeps the spend of hours ago and would keep
        the alert open long after the spend stopped.
        """
        now = self._spend._latest if now_us is None else now_us
        return any(self.rate(now, short) > RECOVERY * f for short, _, f, _ in BURN_RATE_PAIRS)

    def rebaseline(self) -> None:
        """Nothing to relearn: the monthly budget is configuration."""

    def to_state(self) -> dict[str, Any]:
        return {
            "class": "BurnRate",
            "version": STATE_VERSION,
            "monthly_budget": float(self.monthly_budget),
            "spend": self._spend.to_state(),
        }

    @classmethod
    def from_state(cls, state: Any) -> Self:
        name = "BurnRate"
        if not isinstance(state, dict) or state.get("class") != name:
            raise ValueError(f"not a {name} state")
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"{name} state version {state.get('version')!r} unsupported")
        budget = decode(state, "monthly_budget", Field("float", lo=0.0), name)
        try:
            out = cls(budget)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from exc
        spend = WindowSum.from_state(state.get("spend"))
        if spend._n != out._spend._n:
            raise ValueError(f"{name}.spend: expected a {out._spend.window_s} s window")
        out._spend = spend
        return out
