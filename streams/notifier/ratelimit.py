"""Client-side token bucket, one per routing key, on an injected clock."""

from __future__ import annotations


class TokenBucket:
    """``rate_per_s`` tokens per second, at most ``capacity`` saved up.

    Parameters
    ----------
    rate_per_s
        Sustained sends per second (PagerDuty: about 120 events/min per key = 2/s).
    capacity
        Burst size: sends allowed back to back after a quiet period.
    now
        Current time in seconds on the caller's clock.

    Examples
    --------
    >>> bucket = TokenBucket(rate_per_s=2.0, capacity=1, now=0.0)
    >>> bucket.wait_time(0.0)
    0.0
    >>> bucket.take(0.0)
    >>> bucket.wait_time(0.0)
    0.5
    """

    def __init__(self, rate_per_s: float, capacity: int, now: float) -> None:
        if rate_per_s <= 0:
            raise ValueError(f"rate_per_s must be > 0, got {rate_per_s}")
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.rate_per_s = rate_per_s
        self.capacity = capacity
        self._tokens = float(capacity)
        self._updated = now

    def _refill(self, now: float) -> None:
        if now > self._updated:
            saved = self._tokens + (now - self._updated) * self.rate_per_s
            self._tokens = min(float(self.capacity), saved)
            self._updated = now

    def wait_time(self, now: float) -> float:
        """Seconds until one token is available (0.0: send now)."""
        self._refill(now)
        return 0.0 if self._tokens >= 1.0 else (1.0 - self._tokens) / self.rate_per_s

    def take(self, now: float) -> None:
        self._refill(now)
        if self._tokens < 1.0:
            raise RuntimeError("token bucket is empty: wait wait_time(now) seconds before take()")
        self._tokens -= 1.0

    def empty(self, now: float) -> None:
        """The server said we are over its limit (429): start saving from zero."""
        self._refill(now)
        self._tokens = 0.0
