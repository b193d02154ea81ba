"""A stream cut into other batches gives the same detections.

A worker feeds a detector a poll's events of one bundle (a few), a replay thousands; what
the tests decide for later is decided at the end of each growth block, so both see the
same detections, with the same evidence, and the same alert state after them.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.detectors import MetricDetector

KINDS = ("continuous", "poisson", "bernoulli", "categorical")
N = 3_000


def _stream(kind: str, seed: int, shift_at: int) -> tuple[Any, np.ndarray | None]:
    """A stream with a shift at ``shift_at`` that ends 600 values later (and, for the
    continuous kind, autocorrelation and trace codes shared by runs of values)."""
    rng = np.random.default_rng(seed)
    on = (np.arange(N) >= shift_at) & (np.arange(N) < shift_at + 600)
    if kind == "continuous":
        noise = rng.normal(0.0, 1.0, N)
        ar = np.empty(N)
        prev = 0.0
        for i in range(N):
            prev = 0.4 * prev + noise[i]
            ar[i] = prev
        codes = np.cumsum(rng.random(N) < 0.3).astype(np.int64)
        return np.exp(0.4 * ar + np.where(on, 0.4, 0.0)), codes
    if kind == "poisson":
        return rng.poisson(np.where(on, 0.9, 0.3)).astype(np.float64), None
    if kind == "bernoulli":
        return (rng.random(N) < np.where(on, 0.15, 0.03)).astype(np.float64), None
    u = rng.random(N)
    length = u < np.where(on, 0.3, 0.08)
    return np.where(length, "length", np.where(u < 0.6, "stop", "tool")).tolist(), None


def _run(kind: str, values: Any, codes: np.ndarray | None, cuts: list[int]) -> list[Any]:
    det = MetricDetector(kind, warmup=150, window=100, arl0=1e5)
    seen: list[Any] = []
    bounds = [0, *sorted(set(cuts) - {0, N}), N]
    for lo, hi in itertools.pairwise(bounds):
        batch_codes = None if codes is None else codes[lo:hi]
        for d in det.update_many(values[lo:hi], batch_codes):
            seen.append((lo + d.index, d.test, round(d.score, 9), round(d.effect, 9)))
        seen.append(("after", hi, det.shift_holds()))
    # The state after each batch is read only where both runs cut.
    return [s for s in seen if s[0] != "after" or s[1] == N], seen


@settings(max_examples=40, deadline=None)
@given(
    kind=st.sampled_from(KINDS),
    seed=st.integers(0, 10_000),
    shift_at=st.integers(400, 2_000),
    cuts=st.lists(st.integers(1, N - 1), max_size=40),
)
def test_detections_do_not_depend_on_the_batches(
    kind: str, seed: int, shift_at: int, cuts: list[int]
) -> None:
    values, codes = _stream(kind, seed, shift_at)
    whole, _ = _run(kind, values, codes, [])
    batched, _ = _run(kind, values, codes, cuts)
    assert batched == whole


def test_small_batches_and_one_batch_agree_on_a_found_shift() -> None:
    # Not vacuous: the shifts are found, and then resolved, in both.
    for kind in KINDS:
        values, codes = _stream(kind, 7, 1_000)
        whole, _ = _run(kind, values, codes, [])
        small, states = _run(kind, values, codes, list(range(7, N, 7)))
        assert small == whole
        assert any(s[0] != "after" and 1_000 <= s[0] < 1_600 for s in whole), kind
        holds = [s[2] for s in states if s[0] == "after" and 1_100 <= s[1] < 1_600]
        assert holds and all(holds), kind
