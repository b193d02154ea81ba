"""Categorical mix shift (finish reasons): G-test of a rolling window against the reference."""

from __future__ import annotations

import math
from collections import Counter
from functools import lru_cache

import numpy as np
from scipy.special import chdtri

from driftline.detectors._kernels import FloatArray
from driftline.detectors.base import DriftDetector, Field

OTHER = "(other)"
# The reference grows: the labels about to leave the window join it at a test that
# finds the window quiet (its G statistic under the critical value at this level, which
# in control it exceeds in about 1% of the tests), up to REFERENCE_CAP warm-ups; past
# that older counts fade as new ones join. A 500-label warm-up knows a 3% share to
# about +-0.8 points, and one that saw 4 of an expected 15 (measured: 90/7/3 mix, seed
# 4235) made every later window of the true mix fail the test at 1e-3 instead of the
# budget's 5e-5; grown, it closes on the share within a few thousand labels.
GROWTH_P = 1e-2
REFERENCE_CAP = 16


@lru_cache(maxsize=128)
def _quiet_bar(df: int) -> float:
    """The G statistic under which a window counts as quiet (its labels may join)."""
    return float(chdtri(df, GROWTH_P))


def g_statistic(ref_counts: FloatArray, window_counts: FloatArray) -> float:
    """Likelihood-ratio (G) statistic of the 2 x K table ``reference`` vs ``window``.

    >>> round(g_statistic(np.array([50.0, 50.0]), np.array([50.0, 50.0])), 6)
    0.0
    """
    table = np.vstack([ref_counts, window_counts]).astype(np.float64)
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    mask = table > 0
    return float(2.0 * np.sum(table[mask] * np.log(table[mask] / expected[mask])))


def jensen_shannon(p: FloatArray, q: FloatArray) -> float:
    """Jensen-Shannon divergence (base 2, in [0, 1]) between two count vectors."""
    p = p / p.sum()
    q = q / q.sum()
    m = 0.5 * (p + q)

    def kl(a: FloatArray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    return 0.5 * kl(p) + 0.5 * kl(q)


class CategoricalShift(DriftDetector):
    """Shift of a categorical mix: a windowed G-test with an ARL0 budget.

    Categories are the ``max_categories - 1`` most frequent ones of the warm-up plus
    ``"(other)"``. Every ``stride`` observations the last ``window`` are compared with
    the reference counts in a 2 x K contingency table; the test level is the budget
    ``stride / arl0`` (union bound over overlapping tests). The two-sample table
    accounts for the reference being a sample too. A detection empties the window.

    The reference keeps growing while the mix is quiet: at a test whose statistic is
    under the critical value at level ``GROWTH_P``, the ``stride`` oldest labels of the
    window (the next to leave it) join the reference counts, up to ``REFERENCE_CAP``
    warm-ups, past which older counts fade. Labels of a window that tests loud never
    join, so a shift is not learned as normal while it is being weighed.

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
    max_categories
        Bound on tracked categories (the rest pool into ``"(other)"``).

    Examples
    --------
    >>> rng = np.random.default_rng(5)
    >>> before = rng.choice(["stop", "length", "tool_calls"], 1500, p=[0.9, 0.07, 0.03])
    >>> after = rng.choice(["stop", "length", "tool_calls"], 1500, p=[0.8, 0.17, 0.03])
    >>> detector = CategoricalShift(warmup=500, window=500, stride=50, arl0=1e5)
    >>> print(detector.update_many(list(before) + list(after))[:1])
    [1849]

    References
    ----------
    Lin, J. (1991). Divergence measures based on the Shannon entropy. IEEE Trans.
    Information Theory 37, 145-151.
    """

    # Slots: thousands of these live per worker, a __dict__ each would double the state.
    __slots__ = (
        "_categories",
        "_codes",
        "_count",
        "_critical",
        "_pos",
        "_ref_counts",
        "_since_test",
        "arl0",
        "max_categories",
        "stride",
        "warmup",
        "window",
    )
    _ARGS = ("warmup", "window", "stride", "arl0", "max_categories")
    _STATE = {
        "_categories": Field("plain"),
        "_ref_counts": Field("array", lo=0.0),
        "_critical": Field("float", lo=0.0, allow_inf=True),
        "_codes": Field("array", dtype="int8", lo=0),
        "_pos": Field("int", lo=0),
        "_count": Field("int", lo=0),
        "_since_test": Field("int", lo=0),
    }
    _WARM_KIND = "strs"

    def __init__(
        self,
        warmup: int = 500,
        window: int = 500,
        stride: int = 50,
        arl0: float = 1e6,
        max_categories: int = 8,
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
        if not 2 <= max_categories <= 127:
            raise ValueError(f"max_categories must be in [2, 127], got {max_categories}")
        self.warmup = warmup
        self.window = window
        self.stride = stride
        self.arl0 = arl0
        self.max_categories = max_categories
        self._categories: dict[str, int] = {}
        self._ref_counts = np.zeros(0)
        self._critical = math.inf
        self._codes = np.zeros(window, dtype=np.int8)
        self._pos = 0
        self._count = 0
        self._since_test = 0

    @property
    def categories(self) -> list[str]:
        return list(self._categories)

    def reference_counts(self) -> np.ndarray:
        """Reference count per category, in the order of :attr:`categories`."""
        return self._ref_counts.copy()

    def _freeze(self) -> None:
        common = Counter(self._warm).most_common(self.max_categories - 1)
        self._categories = {name: i for i, (name, _) in enumerate(common)}
        self._categories.setdefault(OTHER, len(self._categories))
        codes = self._encode(self._warm)
        self._ref_counts = np.bincount(codes, minlength=len(self._categories)).astype(np.float64)
        df = max(len(self._categories) - 1, 1)
        self._critical = float(chdtri(df, self.stride / self.arl0))
        self._warm = []

    def encode(self, values: list[str]) -> np.ndarray:
        """Category codes (the order of :attr:`categories`) of ``values``; frozen only."""
        return self._encode(values)

    def _encode(self, values: list[str]) -> np.ndarray:
        other = self._categories[OTHER]
        return np.fromiter(
            (self._categories.get(v, other) for v in values), dtype=np.int8, count=len(values)
        )

    def update_many(self, values: list[str]) -> list[int]:
        """Feed a batch of category labels; return the indices of detections."""
        self._drift_detected = False
        found: list[int] = []
        i = 0
        if not self._categories:
            begin = self._warm_up([str(v) for v in values], self.warmup)
            if begin is None:
                return found
            i = begin
            self._freeze()
        codes = self._encode([str(v) for v in values[i:]])
        w = self.window
        j = 0
        while j < codes.shape[0]:
            need = w - self._count if self._count < w else self.stride - self._since_test
            step = min(need, codes.shape[0] - j)
            for c in codes[j : j + step]:  # step <= window; a ring write per value
                self._codes[self._pos] = c
                self._pos = (self._pos + 1) % w
            was_full = self._count >= w
            self._count = min(self._count + step, w)
            if was_full:
                self._since_test += step
            elif self._count >= w:
                self._since_test = self.stride
            j += step
            if self._count >= w and self._since_test >= self.stride:
                self._since_test = 0
                if self._test():
                    found.append(i + j - 1)
        return self._flag(found, len(values))

    def _check_state(self) -> None:
        k = len(self._categories)
        if not all(isinstance(c, int) for c in self._categories.values()):
            raise ValueError("CategoricalShift._categories: codes must be int")
        codes = sorted(self._categories.values())
        if codes != list(range(k)) or (k and OTHER not in self._categories):
            raise ValueError("CategoricalShift._categories: codes must be 0..k-1 with (other)")
        if self._ref_counts.shape != (k,):
            raise ValueError(f"CategoricalShift._ref_counts: expected {k} counts")
        if self._codes.shape != (self.window,) or (k and self._codes.max() >= k):
            raise ValueError("CategoricalShift._codes: wrong size or unknown category code")
        if self._pos >= self.window or self._count > self.window:
            raise ValueError("CategoricalShift._pos/_count: outside the window")

    def _join_oldest(self, k: int) -> None:
        """The ``stride`` oldest labels of the window (the next to leave it) join the
        reference; past ``REFERENCE_CAP`` warm-ups the older counts fade to make room."""
        leaving = self._codes[(self._pos + np.arange(self.stride)) % self.window]
        cap = float(REFERENCE_CAP * self.warmup)
        n = float(self._ref_counts.sum())
        if n + self.stride > cap:
            self._ref_counts *= max(cap - self.stride, 0.0) / n
        self._ref_counts += np.bincount(leaving, minlength=k)

    def holds(self, p_value: float) -> bool:
        """Whether the current window differs from the reference at level ``p_value``.

        The ring keeps the latest ``window`` labels through a detection (only the test
        waits for it to refill), so an open shift keeps holding right after one.
        """
        k = len(self._categories)
        if not k:
            return False
        window_counts = np.bincount(self._codes, minlength=k).astype(np.float64)
        g = g_statistic(self._ref_counts, window_counts)
        return g > float(chdtri(max(k - 1, 1), p_value))

    def _test(self) -> bool:
        k = len(self._categories)
        window_counts = np.bincount(self._codes, minlength=k).astype(np.float64)
        g = g_statistic(self._ref_counts, window_counts)
        if g <= _quiet_bar(max(k - 1, 1)):
            self._join_oldest(k)
        if g <= self._critical:
            return False
        names = list(self._categories)
        ref_mix = (self._ref_counts / self._ref_counts.sum()).round(4).tolist()
        window_mix = (window_counts / max(window_counts.sum(), 1.0)).round(4).tolist()
        self._note(
            {
                "statistic": g,
                "threshold": self._critical,
                "jensen_shannon": jensen_shannon(self._ref_counts + 0.5, window_counts + 0.5),
                "reference_mix": dict(zip(names, ref_mix, strict=True)),
                "window_mix": dict(zip(names, window_mix, strict=True)),
                "window_size": self.window,
                "reference_size": int(self._ref_counts.sum()),
            }
        )
        self._drift_detected = True
        self._count = 0
        self._since_test = 0
        return True
