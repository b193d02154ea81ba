"""All tests of one metric behind one warm-up: what the monitor runs per (workflow, bundle, metric).

Continuous signals get a CUSUM bank (level), a KS window (shape), an EWMA
(creep) and a CUSUM on squared standardized values (spread) on one frozen
reference; counts and rates get a CUSUM on their model's scale; categorical mixes
a G-test on two windows. The metric's ARL0 is split evenly over its tests.

State bound (float32 samples, ``W`` = warm-up, ``N`` = window): before freezing, a
``4 W`` byte warm-up buffer (``12 W`` with the int64 trace codes of the values);
after, a continuous metric holds the warm-up sample twice (standardized for
calibration, sorted for KS) plus one window, ``4 (2W + N)`` bytes, a count or rate
metric ``4 W`` (only until calibrated); plus about 2 KB of Python objects. With the
defaults (500, 500): at most 8 KB (14 KB while warming up).
A categorical metric keeps two windows of int8 codes (``N`` and ``4 N``): 2.5 KB.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Self

import numpy as np

from driftline.detectors._kernels import FloatArray, ewma_filter
from driftline.detectors.base import STATE_VERSION, Field, check_plain, decode
from driftline.detectors.categorical import CategoricalShift
from driftline.detectors.cusum import CUSUM, DEFAULT_SHIFTS
from driftline.detectors.ewma import EWMA
from driftline.detectors.ks import KSWindow
from driftline.detectors.metrics import Kind
from driftline.detectors.reference import FrozenReference

# CUSUM bank (level), KS (shape), EWMA (creep), CUSUM on squares (spread).
CONTINUOUS_TESTS = 4
# A test is armed only when the shift it targets is at least this many standard errors
# of the frozen mean (effective sample size): a 0.2 sd CUSUM member or the creep EWMA
# run on a 250-event reference would mostly be measuring the reference's own error
# (1.5 standard errors of it are guarded; the rest alarms for ever). 5 SE arms the 0.2 sd
# member and the EWMA from 625 effective events, the 0.5 sd member from 100. Measured on
# simulated traffic with 500-event references: at 4 SE about one reference in 30 sat
# more than 2 SE off its steady mean and alarmed about once an hour.
ARMING_SE = 5.0
# The creep EWMA (lam 0.02) is aimed at shifts of about this size (reference sd).
CREEP_SHIFT = 0.2
# Stay-open bar of shift_holds, in standard errors of the recent level (an EWMA over
# about one window) against the reference. Opening an alert takes a test at the
# metric's ARL0 share (1e8 events by default: about 5.7 standard errors for a window
# mean), so 3 is the lower, recovery bar: a persistent shift stays above it, and a
# shift that ended falls below it within about one window.
HOLD_SE = 3.0
# Its counterpart for a categorical mix: the G-test of the short window at this level.
HOLD_P = 1e-3
UNSEEN = 2**62


@dataclass(frozen=True, slots=True)
class Detection:
    index: int  # into the batch passed to update_many
    test: str  # "cusum" | "ks" | "ewma" | "g_test"
    score: float  # statistic / threshold (> 1 at a detection)
    statistic: float
    threshold: float
    baseline_value: float  # on the natural scale
    current_value: float
    effect: float  # (current - baseline) in reference standard deviations; JSD if categorical
    evidence: dict[str, Any] = field(default_factory=dict)


class MetricDetector:
    """The tests of one metric: ``update_many`` returns :class:`Detection` s in index order.

    Parameters
    ----------
    kind
        ``"continuous"`` (values on their natural scale), ``"poisson"``,
        ``"bernoulli"`` or ``"categorical"`` (labels).
    warmup
        Observations frozen as the reference.
    window
        Rolling window of the KS and G tests (the G test also runs on ``4 * window``).
    arl0
        In-control run length of the metric as a whole, split evenly over its tests.
    ewma_lam
        Weight of the newest observation in the creep EWMA.

    Examples
    --------
    >>> rng = np.random.default_rng(11)
    >>> stream = np.concatenate([rng.normal(6, 0.5, 2000), rng.normal(6.7, 0.5, 500)])
    >>> det = MetricDetector("continuous", warmup=500, window=500, arl0=1e6)
    >>> [(d.index, d.test) for d in det.update_many(stream)][:2]
    [(2015, 'cusum'), (2029, 'cusum')]

    References
    ----------
    See :class:`detectors.CUSUM`, :class:`detectors.KSWindow`, :class:`detectors.EWMA`
    and :class:`detectors.CategoricalShift`.
    """

    # Slots: thousands of these live per worker, a __dict__ each would double the state.
    __slots__ = (
        "_categorical",
        "_cusum",
        "_ewma",
        "_groups",
        "_hold",
        "_ks",
        "_level",
        "_moments",
        "_n_warm",
        "_recent_mean",
        "_since_detection",
        "_spread",
        "_square",
        "_warm",
        "arl0",
        "ewma_lam",
        "kind",
        "warmup",
        "window",
    )

    def __init__(
        self,
        kind: Kind,
        warmup: int = 500,
        window: int = 500,
        arl0: float = 1e6,
        ewma_lam: float = 0.02,
    ) -> None:
        if kind not in ("continuous", "poisson", "bernoulli", "categorical"):
            raise ValueError(f"kind must be continuous, poisson, bernoulli or categorical: {kind}")
        if warmup < 20 or window < 20:
            raise ValueError("warmup and window must be >= 20 observations")
        if arl0 <= 4 * window:
            raise ValueError(f"arl0 must exceed 4 windows ({4 * window} events), got {arl0}")
        if not 0.0 < ewma_lam <= 1.0:
            raise ValueError(f"ewma_lam must be in (0, 1], got {ewma_lam}")
        self.kind = kind
        self.warmup = warmup
        self.window = window
        self.arl0 = arl0
        self.ewma_lam = ewma_lam
        self._warm = np.zeros(0 if kind == "categorical" else warmup, dtype=np.float32)
        # Cluster codes of the warm-up values (trace ids): the reference's design effect.
        self._groups: np.ndarray | None = None
        self._n_warm = 0
        self._cusum: CUSUM | None = None
        self._ks: KSWindow | None = None
        self._ewma: EWMA | None = None
        self._spread: CUSUM | None = None
        # A categorical mix is tested on two windows: the short one reacts to large
        # shifts, the long one (4x) has the power for small ones; the budget is split.
        self._categorical: tuple[CategoricalShift, ...] | None = None
        if kind == "categorical":
            self._categorical = tuple(
                CategoricalShift(warmup, w, max(1, w // 10), 2.0 * arl0)
                for w in (window, 4 * window)
            )
        # Exponential mean over about one window of the natural-scale value, for evidence.
        self._recent_mean = 0.0
        # (n, mean, std) of the warm-up sample as observed, for baseline snapshots (the
        # reference itself holds a robust location and, for counts, an upper bound).
        self._moments: tuple[int, float, float] | None = None
        # shift_holds: EWMAs (about one window) of the standardized value and its
        # square, and the reference's (mean, sd) of the square.
        self._level = 0.0
        self._square = 1.0
        self._hold = (1.0, 1.0)
        # Values since the latest detection: a shift holds for a window after one, while
        # the recent level (slower than the test that fired) catches up with it.
        self._since_detection = UNSEEN

    @property
    def frozen(self) -> bool:
        if self._categorical is not None:
            return bool(self._categorical[0].categories)
        return self._cusum is not None

    @property
    def n_warm(self) -> int:
        return self._n_warm

    def recent_values(self) -> FloatArray | None:
        """The latest ``window`` values (natural scale), or ``None`` if fewer were seen.

        During warm-up these are the warm-up values; the canary compares bundles with it.
        """
        if self._ks is not None:
            return self._ks.window_values()
        if self._cusum is None and self._n_warm >= self.window:
            return self._warm[self._n_warm - self.window : self._n_warm].astype(np.float64)
        return None

    def summary(self) -> dict[str, Any]:
        """What a baseline snapshot shows: reference and current state, natural scale.

        ``frozen``, ``n`` (reference size, or values seen so far while warming up),
        ``mean``/``std`` of the reference sample, ``sorted`` (the continuous reference,
        ascending, else None), ``mix`` (categorical reference shares), ``recent_mean``
        (about one window, exponentially weighted) and ``score`` (the level test's
        statistic over its threshold: 1.0 alarms).

        >>> det = MetricDetector("poisson", warmup=50, window=50)
        >>> _ = det.update_many(np.r_[np.zeros(45), np.ones(5)])
        >>> s = det.summary()
        >>> s["frozen"], s["n"], round(s["mean"], 2), s["score"]
        (True, 50, 0.1, 0.0)
        """
        out: dict[str, Any] = {
            "frozen": self.frozen,
            "n": self._n_warm,
            "mean": math.nan,
            "std": math.nan,
            "sorted": None,
            "mix": None,
            "recent_mean": None,
            "score": None,
        }
        if self._categorical is not None:
            shift = self._categorical[0]
            if shift.categories:
                counts = shift.reference_counts()
                out["n"] = int(counts.sum())
                out["mix"] = {
                    c: round(float(k / counts.sum()), 4)
                    for c, k in zip(shift.categories, counts, strict=True)
                }
            return out
        moments = getattr(self, "_moments", None)  # absent in snapshots of older versions
        if moments is not None:
            out["n"], out["mean"], out["std"] = moments
        if self._ks is not None:
            out["sorted"] = self._ks.reference_sorted()
        if self._cusum is not None:
            out["recent_mean"] = self._recent_mean
            out["score"] = self._cusum.score()
        return out

    def _freeze(self) -> None:
        values = self._warm.astype(np.float64)
        assert self.kind != "categorical"
        std = float(values.std(ddof=1)) if values.shape[0] > 1 else 0.0
        self._moments = (int(values.shape[0]), float(values.mean()), std)
        ref = FrozenReference.from_values(values, self.kind, self._groups)
        tests = CONTINUOUS_TESTS if self.kind == "continuous" else 1
        share = self.arl0 * tests
        shifts: tuple[float, ...] = DEFAULT_SHIFTS
        if self.kind == "continuous":
            standard_error = 1.0 / math.sqrt(ref.n_effective)
            shifts = tuple(s for s in DEFAULT_SHIFTS if s >= ARMING_SE * standard_error)
            shifts = shifts or DEFAULT_SHIFTS[-1:]
        # A count or rate (retries, validation failures) alarms on increases only.
        self._cusum = CUSUM.from_reference(
            ref, shifts, arl0=share, upward_only=self.kind != "continuous"
        )
        if self.kind == "continuous":
            self._ks = KSWindow.from_reference(values, ref, self.window, self.window // 5, share)
            if ARMING_SE * standard_error <= CREEP_SHIFT:
                self._ewma = EWMA.from_reference(ref, self.ewma_lam, share)
            # Spread: a CUSUM on squared standardized values (calibrated on their own
            # warm-up distribution) sees a variance change long before a KS window does.
            squares = FrozenReference.from_values(ref.standardize(values) ** 2)
            self._spread = CUSUM.from_reference(squares, shifts=(1.0,), arl0=share)
            z2 = ref.standardize(values) ** 2
            self._hold = (float(z2.mean()), float(z2.std()) + 1e-6)
        self._level = 0.0
        self._square = self._hold[0]
        self._warm = np.zeros(0, dtype=np.float32)
        self._groups = None
        self._recent_mean = ref.mean

    def update_many(
        self, values: FloatArray | list[str], groups: np.ndarray | None = None
    ) -> list[Detection]:
        """Feed a batch; ``groups`` (int64 per value, e.g. hashed trace ids) marks values
        that are not independent of each other, for the reference's effective size."""
        if self._categorical is not None:
            return self._update_categorical([str(v) for v in values])
        x = np.asarray(values, dtype=np.float64)
        start = 0
        if self._cusum is None:
            take = min(self.warmup - self._n_warm, x.shape[0])
            if groups is not None and self.kind == "continuous":
                if self._groups is None:
                    self._groups = np.arange(-self.warmup, 0, dtype=np.int64)  # distinct
                self._groups[self._n_warm : self._n_warm + take] = groups[:take]
            self._warm[self._n_warm : self._n_warm + take] = x[:take]
            self._n_warm += take
            start = take
            if self._n_warm < self.warmup:
                return []
            self._freeze()
        assert self._cusum is not None
        rest = x[start:]
        if not rest.shape[0]:
            return []
        found: list[Detection] = []
        ref = self._cusum.reference
        assert ref is not None
        alpha = 2.0 / (self.window + 1.0)
        recent = ewma_filter(rest, alpha, self._recent_mean)
        self._recent_mean = float(recent[-1])
        z = ref.standardize(rest)
        self._level = float(ewma_filter(z, alpha, self._level)[-1])
        if self._spread is not None:
            self._square = float(ewma_filter(z**2, alpha, self._square)[-1])
        for i in self._cusum.update_many(rest):
            ev = self._cusum.last_detection
            found.append(self._make(start + i, "cusum", ev, recent[i], ref.mean))
        if self._ks is not None:
            for i in self._ks.update_many(rest):
                ev = self._ks.last_detection
                found.append(self._make(start + i, "ks", ev, recent[i], ref.mean))
        if self._ewma is not None:
            for i in self._ewma.update_many(rest):
                ev = self._ewma.last_detection
                found.append(self._make(start + i, "ewma", ev, recent[i], ref.mean))
        if self._spread is not None:
            for i in self._spread.update_many(z**2):
                ev = self._spread.last_detection
                found.append(self._make(start + i, "cusum_spread", ev, recent[i], ref.mean))
        found.sort(key=lambda d: (d.index, d.test))
        return self._count_since(found, x.shape[0])

    def _count_since(self, found: list[Detection], n: int) -> list[Detection]:
        if found:
            self._since_detection = n - 1 - found[-1].index
        else:
            self._since_detection = min(self._since_detection + n, UNSEEN)
        return found

    # --- alert lifecycle ----------------------------------------------------------

    def shift_holds(self) -> bool:
        """Whether the recent window still differs from the reference at the stay-open bar.

        Continuous: the level (an EWMA of the standardized value over about one window)
        or the spread (the same of its square) beyond ``HOLD_SE`` standard errors;
        counts and rates: the level above it; categorical: the short window's G-test at
        level ``HOLD_P``. False before the reference is frozen. A shift that ends falls
        below the bar within about one window (500 events by default).
        """
        if self._since_detection < self.window:
            return True
        if self._categorical is not None:
            return self._categorical[0].holds(HOLD_P)
        if self._cusum is None or self._cusum.reference is None:
            return False
        ref = self._cusum.reference
        # Standard error of the recent level against the reference: the window's own
        # (the EWMA's variance is 1/window in long-run units) and the reference mean's.
        if self.kind != "continuous":
            # A count's reference already sits at the upper bound of its rate.
            return self._level > HOLD_SE * math.sqrt(1.0 / self.window)
        se = math.sqrt(1.0 / self.window + 1.0 / ref.n_effective)
        if abs(self._level) > HOLD_SE * se:
            return True
        m2, sd2 = self._hold
        se_square = sd2 * math.sqrt(1.0 / self.window + ref.inflation / ref.n)
        return abs(self._square - m2) > HOLD_SE * se_square

    def rebaseline(self) -> None:
        """Accept the current behaviour: forget the reference and re-warm from the next values.

        The next ``warmup`` values form the new reference (no detection meanwhile). A
        fresh sample is used rather than the recent window because the window may
        straddle the change being accepted.
        """
        fresh = MetricDetector(self.kind, self.warmup, self.window, self.arl0, self.ewma_lam)
        for name in self.__slots__:
            setattr(self, name, getattr(fresh, name))

    # --- plain state --------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """Plain data (see :mod:`detectors.base`) to continue exactly from here."""

        def sub(det: Any) -> Any:
            return None if det is None else det.to_state()

        return {
            "class": "MetricDetector",
            "version": STATE_VERSION,
            "args": {
                "kind": self.kind,
                "warmup": self.warmup,
                "window": self.window,
                "arl0": self.arl0,
                "ewma_lam": self.ewma_lam,
            },
            "n_warm": self._n_warm,
            "warm": self._warm.copy(),
            "groups": None if self._groups is None else self._groups.copy(),
            "cusum": sub(self._cusum),
            "ks": sub(self._ks),
            "ewma": sub(self._ewma),
            "spread": sub(self._spread),
            "categorical": None
            if self._categorical is None
            else [c.to_state() for c in self._categorical],
            "recent_mean": self._recent_mean,
            "moments": None if self._moments is None else list(self._moments),
            "level": self._level,
            "square": self._square,
            "hold": list(self._hold),
            "since_detection": self._since_detection,
        }

    @classmethod
    def from_state(cls, state: Any) -> Self:
        """Rebuild from :meth:`to_state`; ``ValueError`` names the field that is wrong."""
        name = "MetricDetector"
        if not isinstance(state, dict):
            raise ValueError(f"{name} state must be a dict, got {type(state).__name__}")
        if state.get("class") != name or state.get("version") != STATE_VERSION:
            raise ValueError(f"not a {name} state of version {STATE_VERSION}")
        args = state.get("args")
        if not isinstance(args, dict):
            raise ValueError(f"{name}.args: expected a dict")
        check_plain(args, f"{name}.args")
        try:
            det = cls(**args)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name}.args: {exc}") from exc
        det._n_warm = decode(state, "n_warm", Field("int", lo=0, hi=det.warmup), name)
        frozen = state.get("cusum") is not None or state.get("categorical") is not None
        warm_size = 0 if frozen or det.kind == "categorical" else det.warmup
        det._warm = decode(state, "warm", Field("array", dtype="float32"), name)
        if det._warm.shape != (warm_size,):
            raise ValueError(f"{name}.warm: expected {warm_size} values")
        det._groups = decode(state, "groups", Field("array", dtype="int64", optional=True), name)
        if det._groups is not None and det._groups.shape != (det.warmup,):
            raise ValueError(f"{name}.groups: expected {det.warmup} codes")
        det._cusum = decode(state, "cusum", Field("detector", cls=CUSUM), name)
        det._ks = decode(state, "ks", Field("detector", cls=KSWindow), name)
        det._ewma = decode(state, "ewma", Field("detector", cls=EWMA), name)
        det._spread = decode(state, "spread", Field("detector", cls=CUSUM), name)
        cats = state.get("categorical")
        if (cats is None) != (det.kind != "categorical"):
            raise ValueError(f"{name}.categorical: present exactly for a categorical kind")
        if cats is not None:
            if not isinstance(cats, list) or len(cats) != 2:
                raise ValueError(f"{name}.categorical: expected two detector states")
            det._categorical = tuple(CategoricalShift.from_state(c) for c in cats)
        if det.kind != "categorical" and frozen and det._cusum is None:
            raise ValueError(f"{name}.cusum: a frozen continuous or count metric needs it")
        det._recent_mean = decode(state, "recent_mean", Field("float"), name)
        moments = state.get("moments")
        if moments is not None:
            if not isinstance(moments, list) or len(moments) != 3:
                raise ValueError(f"{name}.moments: expected [n, mean, std]")
            parts = {"n": moments[0], "mean": moments[1], "std": moments[2]}
            n = decode(parts, "n", Field("int", lo=0), f"{name}.moments")
            mean = decode(parts, "mean", Field("float"), f"{name}.moments")
            std = decode(parts, "std", Field("float", lo=0.0), f"{name}.moments")
            det._moments = (n, mean, std)
        det._since_detection = decode(state, "since_detection", Field("int", lo=0, hi=UNSEEN), name)
        det._level = decode(state, "level", Field("float"), name)
        det._square = decode(state, "square", Field("float", lo=0.0), name)
        hold = state.get("hold")
        if not isinstance(hold, list) or len(hold) != 2:
            raise ValueError(f"{name}.hold: expected [mean, sd] of the squared reference")
        pair = {"mean": hold[0], "sd": hold[1]}
        det._hold = (
            decode(pair, "mean", Field("float", lo=0.0), f"{name}.hold"),
            decode(pair, "sd", Field("float", lo=0.0), f"{name}.hold"),
        )
        return det

    def _make(
        self, index: int, test: str, ev: dict[str, Any], current: float, base: float
    ) -> Detection:
        stat, thr = float(ev["statistic"]), float(ev["threshold"])
        assert self._cusum is not None and self._cusum.reference is not None
        effect = (float(current) - base) / self._cusum.reference.scale
        return Detection(
            index, test, abs(stat) / thr, stat, thr, base, float(current), effect, dict(ev)
        )

    def _update_categorical(self, values: list[str]) -> list[Detection]:
        assert self._categorical is not None
        found = []
        for det in self._categorical:
            for i in det.update_many(values):
                ev = det.last_detection
                stat, thr = float(ev["statistic"]), float(ev["threshold"])
                js = float(ev["jensen_shannon"])
                found.append(Detection(i, "g_test", stat / thr, stat, thr, 0.0, js, js, dict(ev)))
        found.sort(key=lambda d: (d.index, -d.score))
        return self._count_since(found, len(values))
