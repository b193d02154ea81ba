"""A poll's few values take the detectors' short paths; they decide as one long batch does.

A worker hands each bundle's detectors a poll's events (one to a few dozen values), where
numpy's per-call cost was most of the monitor's CPU, so short batches are scanned by the
plain recursions (:data:`detectors._kernels.SMALL_BATCH`). These tests hold the short and
the vectorized paths to the same detections and the same statistics.
"""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.detectors import CUSUM, EWMA, RateCUSUM
from driftline.detectors._kernels import SMALL_BATCH, ewma_filter


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, SMALL_BATCH + 40),
    lam=st.floats(1e-4, 1.0),
    y0=st.floats(-5.0, 5.0),
    seed=st.integers(0, 2**16),
)
def test_short_filter_matches_the_vectorized_form(n: int, lam: float, y0: float, seed: int) -> None:
    x = np.random.default_rng(seed).normal(size=n)
    short = ewma_filter(x, lam, y0)
    vectorized = ewma_filter(x[None, :], lam, np.array([y0]))[0]  # 2-D: never the short path
    assert short.shape == (n,)
    assert np.allclose(short, vectorized, rtol=1e-9, atol=1e-12)


def _cuts(n: int, sizes: list[int]) -> list[tuple[int, int]]:
    out, lo = [], 0
    for size in itertools.cycle(sizes):
        out.append((lo, min(lo + size, n)))
        lo += size
        if lo >= n:
            return out
    raise AssertionError("unreachable")


def _stream(seed: int, kind: str) -> np.ndarray:
    """3,000 values with a shift at 1,800 (and back at 2,400): several detections."""
    rng = np.random.default_rng(seed)
    on = (np.arange(3000) >= 1800) & (np.arange(3000) < 2400)
    if kind == "rate":
        return (rng.random(3000) < np.where(on, 0.15, 0.02)).astype(np.float64)
    return rng.normal(np.where(on, 0.6, 0.0), 1.0)


def _detectors() -> dict[str, tuple[EWMA | CUSUM | RateCUSUM, str]]:
    return {
        "ewma": (EWMA(warmup=500, lam=0.05, arl0=1e4), "normal"),
        "cusum": (CUSUM(warmup=500, arl0=1e4), "normal"),
        "rate": (RateCUSUM(warmup=500, arl0=1e4), "rate"),
    }


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(1, SMALL_BATCH + 60), min_size=1, max_size=6),
    seed=st.integers(0, 2**16),
)
def test_batches_of_any_size_decide_as_one(sizes: list[int], seed: int) -> None:
    for name in ("ewma", "cusum", "rate"):
        whole, kind = _detectors()[name]
        cut, _ = _detectors()[name]
        x = _stream(seed, kind)
        expected = whole.update_many(x)
        found: list[int] = []
        for lo, hi in _cuts(x.shape[0], sizes):
            found += [lo + i for i in cut.update_many(x[lo:hi])]
        assert found == expected, name
        assert expected, f"{name}: the shift must be found for this test to mean anything"
        assert np.isclose(cut.score(), whole.score(), rtol=1e-9, atol=1e-12), name


def test_rate_thresholds_follow_the_reference() -> None:
    det = RateCUSUM(warmup=100, arl0=1e5)
    det.set_reference(10.0, 1000.0)
    low = det.thresholds
    det.set_reference(80.0, 1000.0)
    high = det.thresholds
    r = np.asarray(det.ratios)
    for got in (low, high):
        assert got.flags.writeable  # a copy: the shared one stays as it is
    p0 = det.reference_rate
    assert np.allclose(high, np.maximum(np.log(1e5 * r.shape[0] * p0 * (r - 1.0 - np.log(r))), 1.0))
    assert not np.allclose(low, high)
