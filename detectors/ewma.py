"""EWMA of standardized values against the frozen baseline: slow creep (SLO erosion)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from driftline.detectors._kernels import SCAN_CHUNK, SMALL_BATCH, FloatArray, ewma_filter
from driftline.detectors.base import DriftDetector, Field
from driftline.detectors.calibration import DEFAULT_GUARD, ewma_limits
from driftline.detectors.reference import FrozenReference


class EWMA(DriftDetector):
    """Exponentially weighted mean of ``z`` with a limit calibrated on the reference.

    A small ``lam`` averages over about ``2 / lam`` observations, so a mean that
    creeps up by a fraction of a standard deviation over thousands of events is seen
    even when no single step is large. The limit on ``|EWMA|`` is found by simulation
    on the reference for the in-control run length ``arl0``
    (:func:`detectors.calibration.ewma_limits`). A detection restarts the average at 0.

    Parameters
    ----------
    warmup
        Observations that form the frozen reference.
    lam
        Smoothing weight of the newest observation, in (0, 1].
    arl0
        Mean number of in-control observations between false alarms.
    guard
        Standard errors of the frozen mean assumed against the detector in calibration.
    seed
        Seed of the calibration simulation.
    margin
        Added to the calibrated limit (standard deviations): a tolerance for level
        changes too small to matter.

    Examples
    --------
    >>> rng = np.random.default_rng(3)
    >>> creep = np.linspace(0.0, 1.0, 3000)
    >>> stream = np.concatenate([rng.normal(0, 1, 1000), rng.normal(creep, 1)])
    >>> detector = EWMA(warmup=1000, lam=0.02, arl0=1e5)
    >>> print(detector.update_many(stream)[:1])
    [2050]

    References
    ----------
    Roberts, S. W. (1959). Control chart tests based on geometric moving averages.
    Technometrics 1, 239-250.
    """

    # Slots: thousands of these live per worker, a __dict__ each would double the state.
    __slots__ = ("_e", "_limit", "_ref", "arl0", "guard", "lam", "margin", "seed", "warmup")
    _ARGS = ("warmup", "lam", "arl0", "guard", "seed", "margin")
    _STATE = {
        "_ref": Field("reference"),
        "_limit": Field("float", lo=0.0, allow_inf=True),
        "_e": Field("float"),
    }

    def __init__(
        self,
        warmup: int = 500,
        lam: float = 0.02,
        arl0: float = 1e6,
        guard: float = DEFAULT_GUARD,
        seed: int = 0,
        margin: float = 0.0,
    ) -> None:
        super().__init__()
        if warmup < 20:
            raise ValueError(f"warmup must be >= 20 observations, got {warmup}")
        if not 0.0 < lam <= 1.0:
            raise ValueError(f"lam must be in (0, 1], got {lam}")
        if arl0 <= 1:
            raise ValueError(f"arl0 must be > 1 event, got {arl0}")
        if guard < 0:
            raise ValueError(f"guard must be >= 0, got {guard}")
        if not 0.0 <= margin < 1e6:
            raise ValueError(f"margin must be >= 0 standard deviations, got {margin}")
        self.margin = margin
        self.warmup = warmup
        self.lam = lam
        self.arl0 = arl0
        self.guard = guard
        self.seed = seed
        self._ref: FrozenReference | None = None
        self._limit = math.inf
        self._e = 0.0

    @classmethod
    def from_reference(
        cls,
        ref: FrozenReference,
        lam: float,
        arl0: float,
        guard: float = DEFAULT_GUARD,
        margin: float = 0.0,
        long_run: float = 1.0,
    ) -> EWMA:
        det = cls(max(20, ref.n), lam, arl0, guard, margin=margin)
        det._set_reference(ref, long_run)
        return det

    def standardize(self, values: FloatArray) -> FloatArray:
        """``values`` as :meth:`update_many` averages them."""
        if self._ref is None:
            raise ValueError("no reference before the warm-up is over")
        return self._ref.standardize(values)

    @property
    def limit(self) -> float:
        return self._limit

    def _set_reference(self, ref: FrozenReference, long_run: float = 1.0) -> None:
        self._warm = []
        limit = ewma_limits(ref, self.lam, self.arl0, self.guard, self.seed, long_run)
        self._limit = limit + self.margin
        self._ref = ref.without_sample()

    def move_reference(self, mean: float) -> None:
        """Standardize later values around ``mean`` (a reference that slowly follows)."""
        if self._ref is None:
            raise ValueError("no reference to move before the warm-up is over")
        self._ref = replace(self._ref, mean=float(mean))

    def update_many(self, values: FloatArray) -> list[int]:
        """Feed a batch; return the indices (into ``values``) of detections."""
        x = np.asarray(values, dtype=np.float64)
        self._drift_detected = False
        found: list[int] = []
        start = 0
        if self._ref is None:
            begin = self._warm_up(x.tolist(), self.warmup)
            if begin is None:
                return found
            start = begin
            self._set_reference(FrozenReference.from_values(np.asarray(self._warm)))
        assert self._ref is not None
        z = self._ref.standardize(x[start:])
        lam = self.lam
        if z.shape[0] <= SMALL_BATCH:  # a poll's few values: the recursion, value by value
            return self._flag(self._scan_small(z.tolist(), start), x.shape[0])
        while z.shape[0]:
            chunk = z[:SCAN_CHUNK]  # bounded rescans after a detection
            e = ewma_filter(chunk, lam, self._e)
            over = np.flatnonzero(np.abs(e) > self._limit)
            if not over.size:
                self._e = float(e[-1])
                start += chunk.shape[0]
                z = z[chunk.shape[0] :]
                continue
            at = int(over[0])
            self._note({"statistic": float(e[at]), "threshold": self._limit, "lam": lam})
            self._drift_detected = True
            self._e = 0.0
            found.append(start + at)
            start += at + 1
            z = z[at + 1 :]
        return self._flag(found, x.shape[0])

    def _scan_small(self, z: list[float], start: int) -> list[int]:
        """:meth:`update_many`'s scan as the recursion ``ewma_filter`` runs on short batches."""
        lam, keep, limit, e = self.lam, 1.0 - self.lam, self._limit, self._e
        found: list[int] = []
        for i, value in enumerate(z):
            e = keep * e + lam * value
            if abs(e) > limit:
                self._note({"statistic": e, "threshold": limit, "lam": lam})
                self._drift_detected = True
                e = 0.0
                found.append(start + i)
        self._e = e
        return found

    def score(self) -> float:
        return abs(self._e) / self._limit if math.isfinite(self._limit) else 0.0
