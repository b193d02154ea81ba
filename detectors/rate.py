"""Likelihood-ratio CUSUM for a rare count or rate (retries, failures, one finish reason).

A standardized CUSUM tuned for Gaussian shifts of 0.2 .. 1.5 sd is the wrong tool for
a 1% rate: a tripling is a 0.2 sd move of a very skewed variable, and a 500-event
reference with five failures knows the rate only to a factor of two. This detector
instead runs Poisson log-likelihood-ratio CUSUMs for rate ratios ``ratios`` against a
reference rate ``p0``:

    S_t = max(0, S_{t-1} + x_t ln R - (R - 1) p0)

Under the reference rate ``E[exp(increment)] <= 1`` (for Poisson counts and for 0/1
values alike, since ``1 + y <= e^y``), so the Poisson form is a valid likelihood ratio
for both, and the threshold follows from Wald's approximation of its in-control run
length (:attr:`RateCUSUM.thresholds`) with no simulation. ``p0`` is the upper
Jeffreys bound of the reference's rate at ``RATE_GUARD``, re-evaluated whenever the
reference grows (:meth:`RateCUSUM.set_reference`), so a short reference errs towards
silence and a long one closes on the true rate.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy.stats import gamma

from driftline.detectors._kernels import SCAN_CHUNK, FloatArray, cusum_path
from driftline.detectors.base import DriftDetector, Field

DEFAULT_RATIOS = (2.5, 6.0)
# The reference rate is the upper Jeffreys bound at this level: a reference that
# happened to see few events does not alarm on the true rate (which it underestimates
# with probability 5%, and by less than the smallest ratio's allowance as a rule); as
# the reference grows, the bound closes on the rate.
RATE_GUARD = 0.95


def rate_bound(events: float, exposure: float, level: float = RATE_GUARD) -> float:
    """Upper Jeffreys bound of a Poisson rate: ``events`` seen in ``exposure`` trials.

    >>> round(rate_bound(5, 500), 4), round(rate_bound(50, 5000), 4)
    (0.0197, 0.0125)
    """
    return float(gamma.ppf(level, events + 0.5)) / exposure


@functools.lru_cache(maxsize=16)
def _members(ratios: tuple[float, ...]) -> tuple[FloatArray, FloatArray]:
    """(ln R, R - 1) per member, as columns: shared by every detector with these ratios."""
    r = np.asarray(ratios)
    log_r, excess = np.log(r)[:, None], (r - 1.0)[:, None]
    log_r.flags.writeable = excess.flags.writeable = False
    return log_r, excess


@functools.lru_cache(maxsize=16384)
def _thresholds(ratios: tuple[float, ...], p0: float, arl0: float) -> FloatArray:
    """:attr:`RateCUSUM.thresholds`, kept for the references in use: a rate's reference
    changes once a growth block (a poll's few values are scanned many times between)."""
    r = np.asarray(ratios)
    kl = max(p0, 1e-12) * (r - 1.0 - np.log(r))
    out = np.maximum(np.log(arl0 * r.shape[0] * kl), 1.0)
    out.flags.writeable = False
    return out


class RateCUSUM(DriftDetector):
    """Upward CUSUMs of a count's rate against a reference rate that may keep growing.

    Parameters
    ----------
    warmup
        Observations that form the first reference.
    ratios
        Rate ratios the CUSUMs are tuned for (each optimal for its own ratio).
    arl0
        Mean number of in-control observations between false alarms, for the bank.

    Examples
    --------
    >>> rng = np.random.default_rng(4)
    >>> stream = np.r_[rng.random(3000) < 0.02, rng.random(2000) < 0.06].astype(float)
    >>> detector = RateCUSUM(warmup=1000, arl0=1e6)
    >>> print(detector.update_many(stream)[:1])
    [3623]

    References
    ----------
    Lorden, G. (1971). Procedures for reacting to a change in distribution. Annals of
    Mathematical Statistics 42, 1897-1908.
    Lucas, J. M. (1985). Counted data CUSUM's. Technometrics 27, 129-144.
    Siegmund, D. (1985). Sequential Analysis: Tests and Confidence Intervals. Springer.
    """

    __slots__ = ("_events", "_exposure", "_p0", "_s", "arl0", "ratios", "warmup")
    _ARGS = ("warmup", "ratios", "arl0")
    _STATE = {
        "_events": Field("float", lo=0.0),
        "_exposure": Field("float", lo=0.0),
        "_p0": Field("float", lo=0.0),
        "_s": Field("array", lo=0.0),
    }

    def __init__(
        self, warmup: int = 500, ratios: tuple[float, ...] = DEFAULT_RATIOS, arl0: float = 1e6
    ) -> None:
        super().__init__()
        if warmup < 20:
            raise ValueError(f"warmup must be >= 20 observations, got {warmup}")
        if not ratios or any(not 1.0 < r < 1e3 for r in ratios):
            raise ValueError(f"ratios must be rate ratios in (1, 1000), got {ratios}")
        if not 1 < arl0 < 1e300:
            raise ValueError(f"arl0 must be > 1 event, got {arl0}")
        self.warmup = warmup
        self.ratios = tuple(float(r) for r in ratios)
        self.arl0 = arl0
        self._events = 0.0
        self._exposure = 0.0
        self._p0 = 0.0
        self._s = np.zeros(len(self.ratios))

    @property
    def frozen(self) -> bool:
        return self._exposure > 0

    @property
    def thresholds(self) -> FloatArray:
        """Per member: ``ln(arl0 * members * KL)``, ``KL = p0 (R - 1 - ln R)`` per event.

        Wald's approximation of the in-control run length of a likelihood-ratio CUSUM,
        ``exp(h) / KL`` (Siegmund, 1985), its overshoot ignored (which lengthens it:
        simulated at p0 0.2..30%, ARL0 1e5, the run lengths came out 1.0 to 30 times
        the target).
        """
        return _thresholds(self.ratios, self._p0, self.arl0).copy()

    @property
    def reference_rate(self) -> float:
        """The rate the CUSUMs are run against (upper bound of the reference's rate)."""
        return self._p0

    def set_reference(self, events: float, exposure: float) -> None:
        """The reference: ``events`` counted in ``exposure`` in-control observations."""
        if not exposure > 0 or not 0 <= events < math.inf:
            raise ValueError(f"a reference needs exposure > 0, got {events} in {exposure}")
        self._events = float(events)
        self._exposure = float(exposure)
        self._p0 = rate_bound(self._events, self._exposure)

    def score(self) -> float:
        return float(np.max(self._s / self.thresholds)) if self.frozen else 0.0

    def update_many(self, values: FloatArray) -> list[int]:
        x = np.asarray(values, dtype=np.float64)
        found: list[int] = []
        start = 0
        self._drift_detected = False
        if not self.frozen:
            begin = self._warm_up(x.tolist(), self.warmup)
            if begin is None:
                return found
            start = begin
            self.set_reference(float(np.sum(self._warm)), len(self._warm))
            self._warm = []
        log_r, excess = _members(self.ratios)
        drift = excess * self._p0
        h = _thresholds(self.ratios, self._p0, self.arl0)[:, None]
        rest = x[start:]
        while rest.shape[0]:
            chunk = rest[:SCAN_CHUNK]
            paths = cusum_path(chunk[None, :] * log_r - drift, self._s)
            crossed = np.flatnonzero((paths > h).any(axis=0))
            if not crossed.size:
                self._s = paths[:, -1].copy()
                start += chunk.shape[0]
                rest = rest[chunk.shape[0] :]
                continue
            at = int(crossed[0])
            member = int(np.argmax(paths[:, at] / h[:, 0]))
            self._note(
                {
                    "direction": "up",
                    "rate_ratio": self.ratios[member],
                    "reference_rate": self._p0,
                    "statistic": float(paths[member, at]),
                    "threshold": float(h[member, 0]),
                }
            )
            self._s = np.zeros_like(self._s)
            found.append(start + at)
            start += at + 1
            rest = rest[at + 1 :]
        return self._flag(found, x.shape[0])

    def _check_state(self) -> None:
        if self._s.shape != (len(self.ratios),):
            raise ValueError(f"RateCUSUM._s: expected {len(self.ratios)} members")
        if self._events > 0 and self._exposure <= 0:
            raise ValueError("RateCUSUM._exposure: events without exposure")
