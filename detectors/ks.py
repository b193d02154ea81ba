"""Two-sample Kolmogorov-Smirnov of a rolling window against the reference.

The reference starts as the warm-up sample. A caller that grows its reference (the
composite detector, a window behind and only while the metric is quiet) hands the grown
counts per bin back with :meth:`KSWindow.grow`: bins cut at the warm-up's quantiles, so
a few dozen numbers stand for however many values joined, and the test then reads both
ECDFs at the bins' edges.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import kolmogi

from driftline.detectors._kernels import FloatArray
from driftline.detectors.base import DriftDetector, Field
from driftline.detectors.reference import FrozenReference


def ks_statistic(ref_sorted: FloatArray, window: FloatArray) -> float:
    """Largest ECDF gap between a sorted reference and a window."""
    win = np.sort(window)
    grid = np.concatenate([ref_sorted, win])
    f_ref = np.searchsorted(ref_sorted, grid, side="right") / ref_sorted.shape[0]
    f_win = np.searchsorted(win, grid, side="right") / win.shape[0]
    return float(np.max(np.abs(f_ref - f_win)))


# A frozen reference's own ECDF error is allowed for up to its (1 - this) quantile,
# the KS counterpart of the CUSUM's mean guard. Stricter than that guard (~93%): the
# level tests' reference keeps growing and is re-read, the KS window's stays the 500-value
# warm-up for the bundle's life, so one reference in 14 (at 0.07) that happened to sit off
# the stream's shape raised that bundle's false alarms for good, most on slow cycles the
# warm-up saw one phase of (docs/detection.md, "the KS window's frozen reference").
REFERENCE_GUARD_P = 0.01

# Bins of a grown reference, cut at the warm-up's quantiles 1/64 .. 63/64: the ECDF
# compared at 63 points misses at most a bin's mass (1.6%) of the largest gap.
KS_BINS = 64


def ks_critical_value(
    n_ref: int,
    n_window: int,
    alpha: float,
    inflation: float = 1.0,
    frozen_reference: bool = False,
) -> float:
    """Critical ``D`` at level ``alpha`` from the Kolmogorov tail.

    Two live samples: the two-sample bound. Against a *frozen* reference every test
    reuses the same reference, so its error is not averaged away: the bound is the
    window's own ``alpha`` deviation plus the reference's deviation at its
    ``1 - REFERENCE_GUARD_P`` quantile (triangle inequality on the ECDFs).
    Autocorrelation shrinks the effective sample sizes by ``inflation``.

    >>> round(ks_critical_value(500, 500, 0.05), 3)
    0.086
    >>> round(ks_critical_value(500, 500, 0.05, frozen_reference=True), 3)
    0.134
    """
    if not frozen_reference:
        scale = math.sqrt((n_ref + n_window) / (n_ref * n_window) * inflation)
        return float(kolmogi(alpha)) * scale
    window_part = float(kolmogi(alpha)) * math.sqrt(inflation / n_window)
    return window_part + float(kolmogi(REFERENCE_GUARD_P)) * math.sqrt(inflation / n_ref)


class KSWindow(DriftDetector):
    """Shape change: KS distance between the last ``window`` values and the reference.

    The test runs every ``stride`` observations once the window is full. Its level is
    the ARL0 budget turned into a per-test false-alarm probability
    ``stride / arl0`` (a union bound over the overlapping tests, so the realised
    run length is longer than ``arl0``), not a fixed p-value; the critical value
    also allows for the warm-up reference's own error (:func:`ks_critical_value`),
    and stays so when a grown reference is handed in (:meth:`grow`). A detection
    empties the window; the reference changes only by :meth:`grow`.

    Parameters
    ----------
    warmup
        Observations that form the reference.
    window
        Size of the rolling current window.
    stride
        Observations between two tests.
    arl0
        Mean number of in-control observations between false alarms.

    Examples
    --------
    >>> rng = np.random.default_rng(7)
    >>> stream = np.concatenate([rng.normal(0, 1, 1500), rng.normal(0, 2, 1500)])
    >>> detector = KSWindow(warmup=500, window=500, stride=50, arl0=1e5)
    >>> print(detector.update_many(stream))
    [1849, 2349, 2849]

    References
    ----------
    Kolmogorov, A. (1933); Smirnov, N. (1948). Table for estimating the goodness of
    fit of empirical distributions. Annals of Mathematical Statistics 19, 279-281.
    """

    # Slots: thousands of these live per worker, a __dict__ each would double the state.
    __slots__ = (
        "_buf",
        "_count",
        "_critical",
        "_edges",
        "_pos",
        "_ref_cdf",
        "_ref_n",
        "_ref_sorted",
        "_score",
        "_since_test",
        "arl0",
        "stride",
        "warmup",
        "window",
    )
    _ARGS = ("warmup", "window", "stride", "arl0")
    _STATE = {
        "_ref_sorted": Field("array", dtype="float32", optional=True),
        "_critical": Field("float", lo=0.0, allow_inf=True),
        "_edges": Field("array", dtype="float64", optional=True),
        "_ref_cdf": Field("array", dtype="float64", optional=True),
        "_ref_n": Field("float", lo=0.0),
        "_score": Field("float", lo=0.0),
        "_buf": Field("array", dtype="float32"),
        "_pos": Field("int", lo=0),
        "_count": Field("int", lo=0),
        "_since_test": Field("int", lo=0),
    }

    def __init__(
        self, warmup: int = 500, window: int = 500, stride: int = 100, arl0: float = 1e6
    ) -> None:
        super().__init__()
        if warmup < 20:
            raise ValueError(f"warmup must be >= 20 observations, got {warmup}")
        if window < 20:
            raise ValueError(f"window must be >= 20 observations, got {window}")
        if not 1 <= stride <= window:
            raise ValueError(f"stride must be in [1, window], got {stride}")
        if arl0 <= stride:
            raise ValueError(f"arl0 must exceed stride ({stride}), got {arl0}")
        self.warmup = warmup
        self.window = window
        self.stride = stride
        self.arl0 = arl0
        self._ref_sorted: FloatArray | None = None
        self._critical = math.inf
        self._edges: FloatArray | None = None  # the bins of a grown reference
        self._ref_cdf: FloatArray | None = None  # its ECDF at the edges, once grown
        self._ref_n = 0.0
        self._score = 0.0  # the latest test's statistic over the critical value
        self._buf = np.zeros(window, dtype=np.float32)
        self._pos = 0  # next write position in the ring
        self._count = 0  # observations in the window since the last reset (<= window)
        self._since_test = 0

    @classmethod
    def from_reference(
        cls, values: FloatArray, ref: FrozenReference, window: int, stride: int, arl0: float
    ) -> KSWindow:
        """A detector already past warm-up, sharing a reference frozen elsewhere."""
        det = cls(max(20, len(values)), window, stride, arl0)
        det._freeze(np.asarray(values, dtype=np.float64), ref.inflation)
        return det

    @property
    def critical_value(self) -> float:
        return self._critical

    def _freeze(self, values: FloatArray, inflation: float | None = None) -> None:
        if inflation is None:
            inflation = FrozenReference.from_values(values).inflation
        self._ref_sorted = np.sort(values).astype(np.float32)
        quantiles = np.quantile(
            self._ref_sorted.astype(np.float64), np.arange(1, KS_BINS) / KS_BINS
        )
        self._edges = np.unique(quantiles)
        self._ref_cdf = None
        n = self._ref_sorted.shape[0]
        self._ref_n = float(n)
        alpha = self.stride / self.arl0
        self._critical = ks_critical_value(n, self.window, alpha, inflation, frozen_reference=True)
        self._warm = []

    @property
    def bins(self) -> int:
        """Bins of a grown reference (0 before the warm-up is frozen)."""
        return 0 if self._edges is None else self._edges.shape[0] + 1

    def bin_codes(self, values: FloatArray) -> np.ndarray:
        """Each value's bin (0 .. ``bins`` - 1): how many edges lie below it."""
        assert self._edges is not None, "bins exist once the reference is frozen"
        # At the precision the window and the reference hold (float32): a value tied
        # with an edge must fall on the edge's side of it as it does in the window.
        held = np.asarray(values, dtype=np.float32).astype(np.float64)
        return np.searchsorted(self._edges, held, side="left")

    def grow(self, counts: FloatArray) -> None:
        """Take the grown reference: its values' counts per bin (they may be fractional:
        a sliding reference fades its older counts).

        The critical value keeps the warm-up's allowance for the reference's error: a
        grown reference mixes the phases the stream went through, it is no sample of what
        the stream is now, and sharpening the test as it grew brought back a heavy-tailed
        TTFT false alarm (bench/bench_replay.py seed 2026, docs/detection.md).
        """
        counts = np.asarray(counts, dtype=np.float64)
        if counts.shape != (self.bins,):
            raise ValueError(f"expected {self.bins} bin counts, got shape {counts.shape}")
        n = float(counts.sum())
        if n <= 0.0:
            return
        self._ref_cdf = np.cumsum(counts)[:-1] / n
        self._ref_n = n

    def update_many(self, values: FloatArray) -> list[int]:
        """Feed a batch; return the indices (into ``values``) of detections."""
        x = np.asarray(values, dtype=np.float64)
        self._drift_detected = False
        found: list[int] = []
        i = 0
        if self._ref_sorted is None:
            begin = self._warm_up(x.tolist(), self.warmup)
            if begin is None:
                return found
            i = begin
            self._freeze(np.asarray(self._warm))
        assert self._ref_sorted is not None
        w = self.window
        while i < x.shape[0]:
            # Advance to the next test point (or the end of the batch) in one slice.
            need = w - self._count if self._count < w else self.stride - self._since_test
            step = min(need, x.shape[0] - i)
            self._push(x[i : i + step])
            i += step
            if self._count >= w and self._since_test >= self.stride:
                self._since_test = 0
                if self._test():
                    found.append(i - 1)
        return self._flag(found, x.shape[0])

    def _check_state(self) -> None:
        if self._ref_cdf is not None and (
            self._edges is None or self._ref_cdf.shape != self._edges.shape
        ):
            raise ValueError("KSWindow._ref_cdf: one value per edge")
        if self._buf.shape != (self.window,):
            raise ValueError(f"KSWindow._buf: expected {self.window} values")
        if self._pos >= self.window or self._count > self.window:
            raise ValueError("KSWindow._pos/_count: outside the window")
        if self._since_test > self.stride:
            raise ValueError("KSWindow._since_test: beyond the stride")

    def _push(self, chunk: FloatArray) -> None:
        # Callers never push past the next test point, so chunk fits in the ring.
        w = self.window
        n = chunk.shape[0]
        end = self._pos + n
        if end <= w:
            self._buf[self._pos : end] = chunk
        else:
            self._buf[self._pos :] = chunk[: w - self._pos]
            self._buf[: end - w] = chunk[w - self._pos :]
        self._pos = end % w
        was_full = self._count >= w
        self._count = min(self._count + n, w)
        if was_full:
            self._since_test += n
        elif self._count >= w:
            self._since_test = self.stride  # the window just filled: test now

    def _test(self) -> bool:
        assert self._ref_sorted is not None
        if self._ref_cdf is None:
            d = ks_statistic(self._ref_sorted, self._buf.astype(np.float64))
        else:
            assert self._edges is not None
            win = np.sort(self._buf)
            at_edges = np.searchsorted(win, self._edges, side="right") / win.shape[0]
            d = float(np.max(np.abs(self._ref_cdf - at_edges), initial=0.0))
        self._score = d / self._critical
        if d <= self._critical:
            return False
        self._note(
            {
                "statistic": d,
                "threshold": self._critical,
                "window_mean": float(self._buf.mean()),
                "reference_mean": float(self._ref_sorted.mean()),
                "window_size": self.window,
                "reference_size": round(self._ref_n),
            }
        )
        self._drift_detected = True
        self.restart()
        return True

    def restart(self) -> None:
        """The window starts over, as after a detection."""
        self._score = 0.0
        self._count = 0
        self._since_test = 0

    def score(self) -> float:
        """The latest test's statistic over its critical value (0 before the first)."""
        return self._score

    def reference_sorted(self) -> FloatArray | None:
        """The frozen reference sample, ascending (None before it is frozen)."""
        return None if self._ref_sorted is None else self._ref_sorted.astype(np.float64)

    def window_values(self) -> FloatArray | None:
        """The current window in arrival order, or ``None`` until it is full."""
        if self._count < self.window:
            return None
        return np.roll(self._buf, -self._pos).astype(np.float64)

    def nbytes(self) -> int:
        ref = 0 if self._ref_sorted is None else self._ref_sorted.nbytes
        for grown in (self._edges, self._ref_cdf):
            ref += 0 if grown is None else grown.nbytes
        return int(ref + self._buf.nbytes + 8 * len(self._warm) + 128)
