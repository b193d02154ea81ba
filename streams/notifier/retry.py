"""Exponential backoff with full jitter, bounded by attempts and elapsed time."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Delay before retry ``n`` (n >= 1) is uniform in ``[0, min(cap_s, base_s * 2**(n-1))]``.

    Full jitter spreads the retries of many workers after a shared outage. The defaults
    retry in line for about half an hour; then the worker holds the route and keeps the event
    for redelivery every ``cap_s`` at most, for as long as it takes (``driftline replay
    --notify`` gives up instead: ``Notifier(keep_for_redelivery=False)``).

    Examples
    --------
    >>> policy = RetryPolicy(base_s=1.0, cap_s=60.0)
    >>> rng = random.Random(7)
    >>> [round(policy.delay(n, rng), 2) for n in (1, 2, 3, 10)]
    [0.32, 0.3, 2.6, 4.35]
    """

    base_s: float = 1.0
    cap_s: float = 60.0
    max_attempts: int = 100
    max_elapsed_s: float = 1800.0

    def __post_init__(self) -> None:
        if self.base_s <= 0 or self.cap_s < self.base_s:
            raise ValueError(f"need 0 < base_s <= cap_s, got {self.base_s}, {self.cap_s}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.max_elapsed_s < 0:
            raise ValueError(f"max_elapsed_s must be >= 0, got {self.max_elapsed_s}")

    def delay(self, retry: int, rng: random.Random) -> float:
        ceiling = min(self.cap_s, self.base_s * 2.0 ** min(retry - 1, 62))
        return rng.uniform(0.0, ceiling)
