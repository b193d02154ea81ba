"""Event time and pacing: real time paced to the rate, or simulated time at full speed."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

MICROS = 1_000_000


class SimulatedClock:
    """Event time starts at ``start`` and advances with the arrival process; no waiting.

    Hours of traffic take seconds to generate; spans get explicit timestamps.
    """

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime.now(tz=UTC)
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        self.start_us = round(start.timestamp() * MICROS)

    def arrival_us(self, offset_s: float) -> int:
        return self.start_us + round(offset_s * MICROS)

    def wait_until(self, offset_s: float, stop: threading.Event) -> bool:
        """Never waits; False when asked to stop."""
        return not stop.is_set()

    def end_shift_us(self, end_us: int) -> int:
        return 0


class RealtimeClock:
    """Requests arrive at wall-clock pace; each trace is stamped to end when it is sent."""

    def __init__(self) -> None:
        self._t0 = time.monotonic()
        self.start_us = round(time.time() * MICROS)

    def arrival_us(self, offset_s: float) -> int:
        return self.start_us + round(offset_s * MICROS)

    def wait_until(self, offset_s: float, stop: threading.Event) -> bool:
        """Sleep until ``offset_s`` after start; False when asked to stop meanwhile."""
        delay = self._t0 + offset_s - time.monotonic()
        if delay > 0:
            return not stop.wait(delay)
        return not stop.is_set()

    def end_shift_us(self, end_us: int) -> int:
        """Shift that makes a planned trace end now, so no span ends in the future."""
        return round(time.time() * MICROS) - end_us
