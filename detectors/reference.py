"""The frozen reference: what "normal" looked like during warm-up, on the natural scale.

Detectors standardize every later observation by it: ``z = (y - mean) / scale``
(continuous ``z`` clipped to +-3, ``mean`` the matching Huber M-estimate) where
``scale`` is the *long-run* standard deviation (the marginal one inflated by the lag-1
autocorrelation of the reference), so autocorrelated streams do not look like level
shifts. Count and rate signals (retries, validation failures) use their model's
variance instead of the sample's, at the upper Jeffreys bound of the rate
(``RATE_BOUND``), so a reference without a single failure still has a finite scale and
one that saw few failures by chance does not alarm on the true rate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from scipy.stats import beta, chi2, gamma

from driftline.detectors._kernels import FloatArray, lag1_autocorrelation

Model = Literal["continuous", "poisson", "bernoulli"]
MODELS: tuple[Model, ...] = ("continuous", "poisson", "bernoulli")
# Standardized values are clipped here (a robust CUSUM input): heavy-tailed streams
# then keep the run length their calibration promises.
CLIP = 3.0
MIN_SCALE = 1e-3
# A rare count's rate is known to a factor, not to a standard error: 1 retry in 250
# events says the rate is somewhere in 0.001..0.02. Counts and rates are therefore
# watched against the upper Jeffreys bound at this level, so a reference that happened
# to catch few failures does not alarm forever on the true rate.
RATE_BOUND = 0.995


@dataclass(frozen=True, slots=True)
class FrozenReference:
    """Summary of the warm-up sample; ``z_sample`` is kept for calibration by simulation."""

    model: Model
    n: int
    mean: float
    scale: float
    inflation: float  # long-run variance / marginal variance, >= 1
    z_sample: FloatArray  # the warm-up sample standardized (float32 to halve the bound)

    @property
    def n_effective(self) -> float:
        """Independent observations the reference is worth (``n / inflation``)."""
        return self.n / self.inflation

    @classmethod
    def from_values(
        cls,
        values: FloatArray,
        model: Model = "continuous",
        groups: NDArray[np.int64] | None = None,
        min_inflation: float = 1.0,
        min_scale: float = MIN_SCALE,
    ) -> FrozenReference:
        """Freeze ``values`` (already on the natural scale).

        ``groups`` (one code per value, e.g. a hash of the trace id) marks values that
        are not independent: the calls of one agent trace share its context. Their
        design effect (the variance of the mean relative to independent values) then
        inflates the scale when it exceeds the lag-1 inflation, because the calls of one
        trace interleave with other traces' and lag-1 in arrival order does not see them.
        ``min_inflation`` is a floor for it (known from elsewhere, e.g. the values whose
        squares these are), and ``min_scale`` one for the scale.

        >>> ref = FrozenReference.from_values(np.array([1.0, 2.0, 3.0, 4.0]))
        >>> round(ref.mean, 2), ref.n
        (2.5, 4)
        """
        if model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {model!r}")
        y = np.asarray(values, dtype=np.float64)
        n = int(y.shape[0])
        if n < 2:
            raise ValueError("a reference needs at least 2 observations; raise warmup_events")
        if model == "bernoulli":
            mean = float(beta.ppf(RATE_BOUND, y.sum() + 0.5, n - y.sum() + 0.5))
            var = mean * (1.0 - mean)
        elif model == "poisson":
            mean = float(gamma.ppf(RATE_BOUND, y.sum() + 0.5)) / n
            var = mean
        else:
            mean = float(y.mean())
            var = float(y.var(ddof=1))
        rho = lag1_autocorrelation(y) if var > 0 else 0.0
        # Only trust autocorrelation that is distinguishable from sampling noise.
        inflation = 1.0
        if rho > 2.0 / np.sqrt(n):
            rho = min(rho, 0.9)
            inflation = (1.0 + rho) / (1.0 - rho)
        if var > 0 and model == "continuous":
            inflation = max(inflation, long_run_inflation(y))
        if groups is not None and var > 0 and model == "continuous":
            inflation = max(inflation, design_effect(y, groups))
        inflation = max(inflation, min_inflation)
        # A constant warm-up (a fixed TTFT, a pinned KV limit) still needs a finite scale;
        # on the log and logit scales 1e-3 is a 0.1% change.
        scale = max(float(np.sqrt(max(var, MIN_SCALE**2) * inflation)), min_scale)
        if model == "continuous":
            mean = huber_location(y, mean, scale)
        z: FloatArray
        if model == "continuous":
            z = np.clip((y - mean) / scale, -CLIP, CLIP)
        else:
            # Simulate from the smoothed model so rare events absent from warm-up still
            # occur: enough draws to see about 50 of them (dropped after calibration).
            rng = np.random.default_rng(n)
            size = max(n, min(int(50.0 / max(mean, 1e-9)), 200_000))
            draws = rng.binomial(1, mean, size) if model == "bernoulli" else rng.poisson(mean, size)
            z = (draws.astype(np.float64) - mean) / scale
        return cls(model, n, mean, scale, inflation, z.astype(np.float32))

    def without_sample(self) -> FrozenReference:
        """The same reference minus the calibration sample (2 KB saved once calibrated)."""
        return replace(self, z_sample=np.zeros(0, dtype=np.float32))

    def standardize(self, values: FloatArray) -> FloatArray:
        """``(y - mean) / scale``; continuous values clipped to +-``CLIP``.

        One wild value is not a level shift. Counts and rates are not clipped: their
        model bounds them, and a rare failure must keep its full weight.
        """
        z = (np.asarray(values, dtype=np.float64) - self.mean) / self.scale
        if self.model != "continuous":
            return z
        # np.clip's own wrapper costs more than the clipping on a poll's few values.
        return np.minimum(np.maximum(z, -CLIP, out=z), CLIP, out=z)

    def nbytes(self) -> int:
        return int(self.z_sample.nbytes) + 64


def fill_warmup(warm: list[Any], warmup: int, values: Sequence[Any]) -> int:
    """Move leading ``values`` into ``warm`` until it holds ``warmup``; return how many moved.

    Every detector buffers its first ``warmup`` observations before freezing a reference;
    the caller freezes once ``len(warm) == warmup`` and scans ``values[returned:]``.

    >>> warm: list[float] = [1.0]
    >>> fill_warmup(warm, 3, [2.0, 3.0, 4.0]), warm
    (2, [1.0, 2.0, 3.0])
    """
    take = max(min(warmup - len(warm), len(values)), 0)
    warm.extend(values[i] for i in range(take))
    return take


LONG_RUN_LAGS = 10


def long_run_inflation(values: FloatArray, lags: int = LONG_RUN_LAGS) -> float:
    """Long-run over marginal variance from the leading autocorrelations, if real.

    ``1 + 2 sum_k rho_k`` over the lags ``k <= lags`` up to the first one whose
    correlation is indistinguishable from zero (``< 2 / sqrt(n)``; Geyer's initial
    sequence, truncated): it sees runs of related values (the calls of one trace
    arriving together) that the lag-1 correlation alone underrates, without adding
    the noise of the lags beyond them. At most 10.

    >>> y = np.repeat(np.random.default_rng(0).normal(size=150), 4)  # runs of 4
    >>> round(long_run_inflation(y), 1)
    4.2
    """
    x = np.asarray(values, dtype=np.float64)
    x = x - x.mean()
    n = x.shape[0]
    denom = float(np.dot(x, x))
    if denom <= 0.0 or n <= 2 * lags:
        return 1.0
    total = 0.0
    for k in range(1, lags + 1):
        rho = float(np.dot(x[:-k], x[k:])) / denom
        if rho < 2.0 / math.sqrt(n):
            break
        total += rho
    return min(1.0 + 2.0 * total, 10.0)


# Batches of these many growth blocks, the largest with at least BATCHES_MIN of them.
BATCH_SIZES = (1, 2, 5, 10)
BATCHES_MIN = 8
# The estimate used is its lower confidence bound at this level: a stream without slow
# parts keeps the warm-up's inflation 80% of the time instead of half of it.
BATCH_CONFIDENCE = 0.8


def batch_means_inflation(block_sums: FloatArray, block: int, variance: float) -> float:
    """Long-run over marginal variance from the spread of long means (batch means).

    ``block_sums`` holds the sums of consecutive blocks of ``block`` values. The means of
    every run of ``m`` consecutive blocks (overlapping batch means, Meketon and Schmeiser
    1984: two thirds of the variance of disjoint batches) are read against the variance
    independent values would give them (``variance / (m block)``), ``m`` the largest of
    ``BATCH_SIZES`` that still spans ``BATCHES_MIN`` disjoint batches. That sees what a few
    lags of a 500-value sample cannot: slow parts (a daily cycle, a load's slowdown) that
    make a mean of 1,000 values vary more than the lags say. The estimate is a variance
    on few degrees of freedom, so its lower ``BATCH_CONFIDENCE`` bound is returned. 1.0
    without enough blocks or variance; at most 10.

    >>> rng = np.random.default_rng(3)
    >>> cycle = 0.05 * np.sin(np.arange(8000) * 2 * np.pi / 4000)  # +-5%, slow
    >>> y = rng.normal(size=8000) + cycle
    >>> round(batch_means_inflation(y.reshape(-1, 100).sum(axis=1), 100, float(y.var())), 1)
    2.2
    >>> iid = rng.normal(size=8000)
    >>> batch_means_inflation(iid.reshape(-1, 100).sum(axis=1), 100, float(iid.var()))
    1.0
    """
    x = np.asarray(block_sums, dtype=np.float64) / block
    b = x.shape[0]
    fitting = [m for m in BATCH_SIZES if b // m >= BATCHES_MIN]
    if not fitting or variance <= 0.0:
        return 1.0
    m = fitting[-1]
    runs = np.convolve(x, np.ones(m) / m, mode="valid")  # b - m + 1 overlapping means
    spread = float(np.sum((runs - x.mean()) ** 2)) * b * m / ((b - m + 1) * (b - m))
    df = 1.5 * (b / m) - 1.0  # of the overlapping estimator (Meketon and Schmeiser)
    lower = spread * df / float(chi2.ppf(BATCH_CONFIDENCE, df))
    return min(max(lower * block / variance, 1.0), 10.0)


def design_effect(values: FloatArray, groups: NDArray[np.int64]) -> float:
    """Variance of the mean under clustering by ``groups`` over the iid variance, if real.

    Returns 1.0 unless the effect exceeds its sampling noise (about
    ``2 sqrt(2 / clusters)`` for iid values), and at most 10.

    >>> y = np.repeat(np.random.default_rng(0).normal(size=100), 4)  # 4 equal per group
    >>> round(design_effect(y, np.repeat(np.arange(100), 4)), 1)
    4.0
    """
    y = np.asarray(values, dtype=np.float64)
    y = y - y.mean()
    denom = float(np.dot(y, y))
    codes = np.unique(np.asarray(groups), return_inverse=True)[1]
    clusters = int(codes.max()) + 1 if codes.size else 0
    if denom <= 0.0 or clusters < 2 or clusters == y.shape[0]:
        return 1.0
    sums = np.bincount(codes, weights=y)
    effect = float(np.dot(sums, sums)) / denom
    if effect <= 1.0 + 2.0 * np.sqrt(2.0 / clusters):
        return 1.0
    return min(effect, 10.0)


def huber_location(y: FloatArray, start: float, scale: float, iterations: int = 20) -> float:
    """Location where the *clipped* standardized reference averages to zero.

    The detectors see ``clip(z, -CLIP, CLIP)``; centring on Huber's M-estimate (rather
    than the plain mean) makes the in-control increments average to zero and keeps
    a heavy-tailed warm-up's outliers from moving the baseline.
    """
    mu = start
    for _ in range(iterations):
        step = scale * float(np.mean(np.clip((y - mu) / scale, -CLIP, CLIP)))
        mu += step
        if abs(step) < 1e-9 * scale:
            break
    return mu
