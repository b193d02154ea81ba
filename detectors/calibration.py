"""Thresholds from a false-alarm budget, calibrated by simulation on the reference.

A detector gets an in-control average run length (ARL0, in events) as its share of
the workflow's budget. For a CUSUM with reference value ``k`` the threshold ``h`` is
found in three steps, vectorized over the whole bank at once:

1. Simulate ``ROWS`` in-control paths of ``LENGTH`` events by block-bootstrapping the
   standardized warm-up sample (blocks keep its autocorrelation), with the mean
   moved against the detector by ``guard / sqrt(n)``: the frozen mean is itself an
   estimate, and a chart run on an estimate that happens to sit on the wrong side
   alarms far more often than its nominal ARL0 (Gandy & Kvaloy, 2013).
2. The median of the per-path maximum of ``S`` is a threshold ``h0`` whose ARL is
   ``LENGTH / ln 2`` (run lengths are close to exponential).
3. Extrapolate to the budget with the tail rate: ``ARL(h) ~ ARL(h0) exp(theta (h - h0))``
   where ``theta`` is Lundberg's adjustment coefficient of the increments on the
   empirical reference distribution (heavy tails included), divided by the long-run
   variance inflation, or that of sums of ``BLOCK`` consecutive increments if smaller
   (runs of dependent values), or a Gaussian's of the long-run variance if smaller.

The result is cached per reference, so a baseline is calibrated once when it freezes.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict

import numpy as np

from driftline.detectors._kernels import (
    FloatArray,
    adjustment_coefficient,
    block_bootstrap,
    cusum_path,
    ewma_filter,
)
from driftline.detectors.reference import CLIP, FrozenReference

ROWS = 48
LENGTH = 2048
BLOCK = 8
# Standard errors of the frozen mean held against the detector (1.5: ~93% of references).
DEFAULT_GUARD = 1.5
# Smallest threshold of a continuous CUSUM, in maximal (clipped) increments: the
# largest member of the bank would otherwise alarm on a single trace of extreme calls
# (measured: heavy tails with AR(1) 0.5 or trace clusters, 1 alarm per 20-60k events);
# 5 keeps it the first to fire on a shift of 1.5 sd or more (what makes an error).
MIN_RUN = 5
_MAX_THETA = 50.0
_CACHE_SIZE = 4096
_cache: OrderedDict[bytes, FloatArray] = OrderedDict()


def _key(ref: FrozenReference, *parts: object) -> bytes:
    h = hashlib.blake2b(ref.z_sample.tobytes(), digest_size=16)
    h.update(repr((ref.n, ref.inflation, *parts)).encode())
    return h.digest()


def cusum_thresholds(
    ref: FrozenReference,
    directions: FloatArray,
    drifts: FloatArray,
    arl0: float,
    guard: float = DEFAULT_GUARD,
    seed: int = 0,
    long_run: float | tuple[float, ...] = 1.0,
) -> FloatArray:
    """Threshold for each CUSUM ``(direction, drift k)`` so each has ARL0 ``arl0`` events.

    ``long_run`` (one for all, or one per member) is the variance of long sums of the
    values in the reference's unit, for the Gaussian floor of the tail: above 1 where the
    reference's inflation is known not to cover the member's time scale yet.

    >>> rng = np.random.default_rng(1)
    >>> ref = FrozenReference.from_values(rng.normal(size=2000))
    >>> h = cusum_thresholds(ref, np.array([1.0, -1.0]), np.array([0.5, 0.5]), 1e5)
    >>> bool(np.all((h > 5 * (3 - 0.5)) & (h < 25)))
    True
    """
    if arl0 <= 1:
        raise ValueError(f"arl0 must be > 1 event, got {arl0}")
    _require_sample(ref)
    key = _key(ref, tuple(directions), tuple(drifts), arl0, guard, seed, long_run)
    if (hit := _cache.get(key)) is not None:
        _cache.move_to_end(key)
        return hit
    rng = np.random.default_rng(seed)
    z = ref.z_sample.astype(np.float64)
    paths = block_bootstrap(rng, z, ROWS, LENGTH, BLOCK)
    bias = guard / math.sqrt(ref.n)
    arl_h0 = LENGTH / math.log(2.0)
    out = np.empty(len(drifts))
    long_runs = np.broadcast_to(np.asarray(long_run, dtype=np.float64), (len(drifts),))
    for i, (d, k) in enumerate(zip(directions, drifts, strict=True)):
        maxima = cusum_path(d * paths + bias - k).max(axis=1)
        h0 = float(np.median(maxima))
        increments = d * z + bias - k
        # Dependent increments (runs of one trace's calls) make the tail heavier than
        # iid ones divided by the inflation suggest: the coefficient of sums over
        # BLOCK consecutive increments bounds it from their own joint behaviour.
        sums = np.convolve(increments, np.ones(BLOCK), mode="valid")
        # And no lighter than a Gaussian of the long-run variance (1 in these units, or
        # the member's long_run): a 500-value sample rarely shows the rare large
        # cluster that a stream of millions will, on the side where it happened to see none.
        gaussian = 2.0 * max(k - bias, 1e-3) / float(long_runs[i])
        theta = min(
            adjustment_coefficient(increments) / ref.inflation,
            adjustment_coefficient(sums),
            gaussian,
        )
        theta = min(theta, _MAX_THETA) if theta > 0 else 1e-3
        h = h0 + math.log(max(arl0 / arl_h0, 1.0)) / theta
        if ref.model == "continuous":
            # A run of MIN_RUN values at the clip (one trace's calls, all extreme) is not
            # enough on its own: a 500-value sample says little about such runs.
            h = max(h, MIN_RUN * (CLIP - (k - bias)))
        out[i] = max(h, 1e-6)
    _cache[key] = out
    if len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return out


def ewma_limits(
    ref: FrozenReference,
    lam: float,
    arl0: float,
    guard: float = DEFAULT_GUARD,
    seed: int = 0,
    long_run: float = 1.0,
) -> float:
    """Limit ``L`` on ``|EWMA(z)|`` with in-control ARL ``arl0`` (per side budget halved).

    Simulated like :func:`cusum_thresholds`; the Gaussian tail of the EWMA gives the
    extrapolation ``L^2 = L0^2 + 2 var ln(ARL0 / ARL(L0))``, ``var`` no less than the
    EWMA's of a process of long-run variance ``long_run``.
    """
    _require_sample(ref)
    key = _key(ref, "ewma", lam, arl0, guard, seed, long_run)
    if (hit := _cache.get(key)) is not None:
        return float(hit[0])

    rng = np.random.default_rng(seed)
    z = ref.z_sample.astype(np.float64)
    paths = block_bootstrap(rng, z, ROWS, LENGTH * 4, BLOCK)
    bias = guard / math.sqrt(ref.n)
    e = ewma_filter(paths + bias, lam)[:, int(4 / lam) :]
    dev = e - bias
    # No less than the EWMA variance of a process with the reference's long-run variance
    # (1 in these units, or long_run): block resampling cuts runs longer than a block short.
    var = max(float(dev.var()), long_run * lam / (2.0 - lam))
    l0 = float(np.median(e.max(axis=1))) - bias
    arl_l0 = e.shape[1] / math.log(2.0)
    limit = bias + math.sqrt(l0 * l0 + 2.0 * var * math.log(max(2.0 * arl0 / arl_l0, 1.0)))
    _cache[key] = np.array([limit])
    return limit


def _require_sample(ref: FrozenReference) -> None:
    if ref.z_sample.shape[0] < 2:
        raise ValueError(
            "this reference was already calibrated and dropped its sample; "
            "calibrate with the reference returned by FrozenReference.from_values"
        )
