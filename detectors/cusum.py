"""Two-sided CUSUM bank on standardized values: fast level shifts of unknown size."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from driftline.detectors._kernels import SCAN_CHUNK, FloatArray, cusum_path, scan_with_resets
from driftline.detectors.base import DriftDetector, Field
from driftline.detectors.calibration import DEFAULT_GUARD, cusum_thresholds
from driftline.detectors.reference import MODELS, FrozenReference, Model

DEFAULT_SHIFTS = (0.2, 0.5, 1.5)


class CUSUM(DriftDetector):
    """Page's CUSUM, a small bank of target shifts in both directions.

    The first ``warmup`` observations freeze a :class:`FrozenReference`; later ones are
    standardized by it and fed to ``2 * len(shifts)`` one-sided CUSUMs with reference
    values ``k = shift / 2`` (optimal for a shift of ``shift`` long-run standard
    deviations). Each CUSUM's threshold is calibrated by simulation on the reference
    so the whole bank meets the in-control run length ``arl0`` (see
    :mod:`detectors.calibration`). A detection resets the statistics, not the reference.

    Parameters
    ----------
    warmup
        Observations that form the frozen reference.
    shifts
        Target shift sizes, in long-run standard deviations of the reference.
    arl0
        Mean number of in-control observations between false alarms, for the bank.
    model
        ``"continuous"`` (values already on their natural scale, e.g. log tokens),
        ``"poisson"`` (counts such as retries) or ``"bernoulli"`` (0/1 failures).
    guard
        Standard errors of the frozen mean assumed against the detector in calibration.
    seed
        Seed of the calibration simulation.
    upward_only
        Watch increases only (failures, retries: fewer of them is not an incident).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(42)
    >>> stream = np.concatenate([rng.normal(0, 1, 1500), rng.normal(0.5, 1, 1000)])
    >>> detector = CUSUM(warmup=500, arl0=1e5)
    >>> for i, x in enumerate(stream):
    ...     detector.update(x)
    ...     if detector.drift_detected:
    ...         print(f"change detected at index {i}")
    ...         break
    change detected at index 1749

    References
    ----------
    Page, E. S. (1954). Continuous inspection schemes. Biometrika 41, 100-115.
    Gandy, A., Kvaloy, J. T. (2013). Guaranteed conditional performance of control
    charts via bootstrap methods. Scandinavian Journal of Statistics 40, 647-668.
    """

    # Slots: thousands of these live per worker, a __dict__ each would double the state.
    __slots__ = (
        "_directions",
        "_drifts",
        "_ref",
        "_s",
        "_thresholds",
        "arl0",
        "guard",
        "model",
        "seed",
        "shifts",
        "upward_only",
        "warmup",
    )
    _ARGS = ("warmup", "shifts", "arl0", "model", "guard", "seed", "upward_only")
    _STATE = {
        "_ref": Field("reference"),
        "_thresholds": Field("array", lo=0.0, allow_inf=True),
        "_s": Field("array", lo=0.0),
    }

    def __init__(
        self,
        warmup: int = 500,
        shifts: tuple[float, ...] = DEFAULT_SHIFTS,
        arl0: float = 1e6,
        model: Model = "continuous",
        guard: float = DEFAULT_GUARD,
        seed: int = 0,
        upward_only: bool = False,
    ) -> None:
        super().__init__()
        if warmup < 20:
            raise ValueError(f"warmup must be >= 20 observations, got {warmup}")
        if not shifts or any(s <= 0 for s in shifts):
            raise ValueError(f"shifts must be positive sizes in standard deviations, got {shifts}")
        if arl0 <= 1:
            raise ValueError(f"arl0 must be > 1 event, got {arl0}")
        if model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {model!r}")
        if guard < 0:
            raise ValueError(f"guard must be >= 0, got {guard}")
        self.warmup = warmup
        self.shifts = tuple(float(s) for s in shifts)
        self.arl0 = arl0
        self.model = model
        self.guard = guard
        self.seed = seed
        self.upward_only = upward_only
        m = len(self.shifts)
        sides = (1.0,) if upward_only else (1.0, -1.0)
        self._directions = np.repeat(sides, m)
        self._drifts = np.tile(np.asarray(self.shifts) / 2.0, len(sides))
        self._ref: FrozenReference | None = None
        self._thresholds = np.full(len(sides) * m, np.inf)
        self._s = np.zeros(len(sides) * m)

    @classmethod
    def from_reference(
        cls,
        ref: FrozenReference,
        shifts: tuple[float, ...] = DEFAULT_SHIFTS,
        arl0: float = 1e6,
        guard: float = DEFAULT_GUARD,
        upward_only: bool = False,
        long_run: float | tuple[float, ...] = 1.0,
    ) -> CUSUM:
        """A detector already past warm-up, sharing a reference frozen elsewhere.

        ``long_run`` is the variance of long sums of the values, in the reference's own
        unit (1 when its inflation already covers the time scale the members add over),
        for the whole bank or one per member (the order of ``shifts``, both sides alike).
        """
        det = cls(max(20, ref.n), shifts, arl0, ref.model, guard, upward_only=upward_only)
        det._set_reference(ref, long_run)
        return det

    @property
    def reference(self) -> FrozenReference | None:
        return self._ref

    @property
    def thresholds(self) -> FloatArray:
        return self._thresholds

    def score(self) -> float:
        """Largest ``S / h`` in the bank: 1.0 means at threshold."""
        return float(np.max(self._s / self._thresholds)) if self._ref else 0.0

    def _freeze(self) -> None:
        self._set_reference(FrozenReference.from_values(np.asarray(self._warm), self.model))

    def _set_reference(
        self, ref: FrozenReference, long_run: float | tuple[float, ...] = 1.0
    ) -> None:
        self._ref = ref
        self._warm = []
        # Bonferroni split of the bank's budget over its members.
        share = self.arl0 * len(self._drifts)
        if isinstance(long_run, tuple):
            long_run = tuple(np.tile(long_run, len(self._drifts) // len(long_run)))
        self._thresholds = cusum_thresholds(
            ref, self._directions, self._drifts, share, self.guard, self.seed, long_run
        )
        self._ref = ref.without_sample()

    def _detect(self, member: int) -> None:
        self._drift_detected = True
        self._note(
            {
                "direction": "up" if self._directions[member] > 0 else "down",
                "shift_sd": float(self._drifts[member] * 2.0),
                "statistic": float(self._s[member]),
                "threshold": float(self._thresholds[member]),
            }
        )
        self._s = np.zeros_like(self._s)

    def move_reference(self, mean: float) -> None:
        """Standardize later values around ``mean`` (a reference that slowly follows)."""
        if self._ref is None:
            raise ValueError("no reference to move before the warm-up is over")
        self._ref = replace(self._ref, mean=float(mean))

    def increments(self, values: FloatArray, direction: str, shift_sd: float) -> FloatArray:
        """What the member of a detection (its ``direction`` and ``shift_sd``) adds to its
        statistic for each of ``values``, as :meth:`update_many` adds it."""
        if self._ref is None:
            raise ValueError("no reference before the warm-up is over")
        sign = 1.0 if direction == "up" else -1.0
        return sign * self._ref.standardize(values) - 0.5 * shift_sd

    def update_many(self, values: FloatArray) -> list[int]:
        """Feed a batch; return the indices (into ``values``) of detections."""
        x = np.asarray(values, dtype=np.float64)
        found: list[int] = []
        start = 0
        self._drift_detected = False
        if self._ref is None:
            begin = self._warm_up(x.tolist(), self.warmup)
            if begin is None:
                return found
            start = begin
            self._freeze()
        assert self._ref is not None
        z = self._ref.standardize(x[start:])
        directions, drifts = self._directions[:, None], self._drifts[:, None]
        thresholds = self._thresholds[:, None]
        while z.shape[0]:
            # At most a chunk past the last detection: many detections stay linear.
            chunk = z[:SCAN_CHUNK]
            paths = cusum_path(directions * chunk - drifts, self._s)
            ratio = paths / thresholds
            crossed = (ratio > 1.0).any(axis=0)
            if not crossed.any():
                self._s = paths[:, -1].copy()
                start += chunk.shape[0]
                z = z[chunk.shape[0] :]
                continue
            at = int(crossed.argmax())
            self._s = paths[:, at].copy()
            self._detect(int(np.argmax(ratio[:, at])))
            found.append(start + at)
            start += at + 1
            z = z[at + 1 :]
        return self._flag(found, x.shape[0])

    def _check_state(self) -> None:
        members = self._drifts.shape[0]
        for name in ("_s", "_thresholds"):
            if getattr(self, name).shape != (members,):
                raise ValueError(f"CUSUM.{name}: expected {members} members")


def cusum_rows(
    z: FloatArray, state: FloatArray, drifts: FloatArray, thresholds: FloatArray
) -> list[tuple[int, int]]:
    """One-sided CUSUMs for many streams at once; the batch form for many workflows.

    ``z`` is ``(rows, T)`` standardized values (pad a short row with values equal to
    its drift, which leave the statistic unchanged), ``state`` the ``(rows,)`` statistics updated in
    place, ``drifts`` and ``thresholds`` ``(rows,)``. Returns ``(row, index)``
    detections; a detection resets that row's statistic to zero.

    >>> z = np.zeros((2, 5)); z[1, 2:] = 3.0
    >>> s = np.zeros(2)
    >>> cusum_rows(z, s, np.array([0.5, 0.5]), np.array([4.0, 4.0]))
    [(1, 3)]
    """
    incr = z - drifts[:, None]
    before = state.copy()
    paths = cusum_path(incr, before)
    hit_rows = np.flatnonzero((paths > thresholds[:, None]).any(axis=1))
    state[:] = paths[:, -1]
    found: list[tuple[int, int]] = []
    for row in hit_rows:
        alarms, s_end = scan_with_resets(incr[row], float(before[row]), float(thresholds[row]))
        found.extend((int(row), a) for a in alarms)
        state[row] = s_end
    return found


def cusum_bank_rows(
    z: NDArray[np.floating[Any]],
    state: FloatArray,
    directions: FloatArray,
    drifts: FloatArray,
    thresholds: FloatArray,
) -> list[tuple[int, int]]:
    """A whole CUSUM bank for many workflows at once: the batch form the stream uses.

    ``z`` is ``(rows, T)`` values standardized and clipped by each row's reference
    (:meth:`FrozenReference.standardize`), one row per workflow; ``state`` the ``(rows, members)``
    statistics, updated in place; ``directions``, ``drifts`` are the bank's
    ``(members,)``, ``thresholds`` ``(rows, members)``. The scan runs in float32 on
    one running sum per row shared by all members; a row that crosses is rescanned
    exactly (float64, with resets). Returns ``(row, index)`` detections, at most one
    per row and index.

    >>> z = np.zeros((2, 6)); z[1, 2:] = 3.0
    >>> state = np.zeros((2, 2))
    >>> d, k = np.array([1.0, -1.0]), np.array([0.5, 0.5])
    >>> cusum_bank_rows(z, state, d, k, np.full((2, 2), 4.0))
    [(1, 3), (1, 5)]
    """
    rows, length = z.shape
    running = np.cumsum(z, axis=1, dtype=np.float32)
    steps = np.arange(1, length + 1, dtype=np.float32)
    path = np.empty_like(running)
    floor = np.empty_like(running)
    crossed = np.zeros(rows, dtype=bool)
    before = state.copy()
    for j in range(directions.shape[0]):
        np.multiply(running, np.float32(directions[j]), out=path)
        path -= np.float32(drifts[j]) * steps
        np.minimum.accumulate(path, axis=1, out=floor)
        np.minimum(floor, (-before[:, j])[:, None].astype(np.float32), out=floor)
        path -= floor
        crossed |= path.max(axis=1) > thresholds[:, j]
        state[:, j] = path[:, -1]
    found: set[tuple[int, int]] = set()
    for row in np.flatnonzero(crossed):
        found.update(_rescan_row(z[row], before, state, int(row), directions, drifts, thresholds))
    return sorted(found)


def _rescan_row(
    z: FloatArray,
    before: FloatArray,
    state: FloatArray,
    row: int,
    directions: FloatArray,
    drifts: FloatArray,
    thresholds: FloatArray,
) -> list[tuple[int, int]]:
    # Exact float64 rescan of a row with detections; all members reset on a detection.
    x = np.asarray(z, dtype=np.float64)
    incr = directions[:, None] * x[None, :] - drifts[:, None]
    s = before[row].astype(np.float64)
    found = []
    start = 0
    while start < x.shape[0]:
        paths = cusum_path(incr[:, start:], s)
        over = np.flatnonzero((paths > thresholds[row][:, None]).any(axis=0))
        if not over.size:
            s = paths[:, -1]
            break
        at = int(over[0])
        found.append((row, start + at))
        s = np.zeros_like(s)
        start += at + 1
    state[row] = s
    return found
