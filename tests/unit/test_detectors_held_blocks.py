"""Blocks dropped while a shift held join the reference once the metric is quiet again."""

from __future__ import annotations

import numpy as np
import pytest

from bench.bench_cycles import alerts, cycling
from driftline.detectors import composite
from driftline.detectors.composite import MetricDetector
from driftline.detectors.growth import ReferenceGrowth


def test_a_slow_cycle_alarms_once_not_every_cycle() -> None:
    # A +-9% cycle (0.15 sd) of 5,000 values: the first alert comes while the reference
    # is young and knows one phase. Its blocks used to be dropped while the alert held,
    # so the reference learned only the other phases and alarmed on every cycle after.
    # The slow-cycle bench's streams and lifecycle (bench/bench_cycles.py).
    streams = [cycling(seed, 40_000, 0.09, 5_000) for seed in (0, 1, 3, 5)]
    held = [alerts(x) for x in streams]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(composite, "HELD_BLOCKS", 0)
        dropped = [alerts(x) for x in streams]
    assert max(held) <= 2, held
    # Seed 5's reference follows the cycle's first rise either way (young, under two
    # windows, its blocks wait a quarter of its length while a test builds up): 0 alerts
    # without held blocks too. The other three alarm on every cycle without them.
    assert sorted(dropped)[1] >= 6, dropped


def test_held_blocks_join_within_the_band_once_quiet() -> None:
    g = ReferenceGrowth(columns=2, block=10, lag=10, cap=1000, held=5)
    g.start(np.array([100.0, 0.0]))
    near, far = np.c_[np.ones(10), np.full(10, 0.2)], np.c_[np.ones(10), np.full(10, 3.0)]
    assert g.push(np.concatenate([near, far, near]), quiet=False) == 0  # a shift holds
    assert g.push(np.c_[np.ones(10), np.zeros(10)], quiet=True, band=(-0.5, 0.5)) == 2
    # The block that waited its lag, and the one near the reference; the far one is gone.
    assert g.totals.tolist() == pytest.approx([120.0, 4.0])
    assert g.push(np.c_[np.ones(10), np.zeros(10)], quiet=True, band=(-0.5, 0.5)) == 1


def test_without_held_the_blocks_of_a_held_shift_are_dropped() -> None:
    g = ReferenceGrowth(columns=2, block=10, lag=10, cap=1000)
    g.start(np.array([100.0, 0.0]))
    g.push(np.c_[np.ones(30), np.full(30, 0.2)], quiet=False)
    assert g.push(np.c_[np.ones(10), np.zeros(10)], quiet=True, band=(-0.5, 0.5)) == 1
    assert g.totals.tolist() == pytest.approx([110.0, 2.0])  # the one that waited its lag


def test_held_blocks_survive_a_snapshot() -> None:
    g = ReferenceGrowth(columns=2, block=10, lag=10, cap=1000, held=5)
    g.start(np.array([100.0, 0.0]))
    g.push(np.c_[np.ones(30), np.full(30, 0.2)], quiet=False)
    again = ReferenceGrowth.from_state(g.to_state())
    assert again.push(np.c_[np.ones(10), np.zeros(10)], quiet=True, band=(-1, 1)) == 3
    with pytest.raises(ValueError, match="held"):
        state = g.to_state()
        state["held"] = np.ones((6, 2))
        ReferenceGrowth.from_state(state)


def test_a_snapshot_from_before_held_blocks_holds_them_once_restored() -> None:
    det = MetricDetector("continuous", warmup=500, window=500, arl0=2.7e7)
    det.update_many(np.random.default_rng(0).normal(size=3000))
    state = det.to_state()
    growth = state["_growth"]
    del growth["args"]["held"], growth["held"]  # as written before blocks were held aside
    restored = MetricDetector.from_state(state)
    assert restored._growth is not None and restored._growth.held == composite.HELD_BLOCKS
