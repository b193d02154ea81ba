"""A shape detection from the window a decided recovery starts over holds nothing.

Decisions wait for the end of a growth block; the KS window starts over at a decided
"back", but its detections later in the same block were made before that restart
(bench/bench_replay.py seed 81, doc-summarize-081-21: such a detection armed a small
level test after the transient had been decided over, and the alert resolved 1,843
events after the transient's end instead of 395).
"""

from __future__ import annotations

import numpy as np

from driftline.detectors import MetricDetector


def _cleared_after_end(seed: int) -> int | None:
    """Values from the end of a x1.6 transient of 700 values to the first batch after
    which the shift no longer holds (None: it held to the end of the stream)."""
    rng = np.random.default_rng(seed)
    values = np.exp(rng.normal(0.0, 0.5, 12_000))
    values[6_000:6_700] *= 1.6
    det = MetricDetector("continuous", warmup=500, window=500, arl0=2.7e7)
    found = False
    for start in range(0, values.shape[0], 37):
        found |= bool(det.update_many(values[start : start + 37]))
        if start >= 6_700 and found and not det.shift_holds():
            return start - 6_700
    return None


def test_a_transient_clears_within_two_windows_of_its_end() -> None:
    cleared = [_cleared_after_end(seed) for seed in range(30)]
    assert all(c is not None for c in cleared)
    # Seed 21 cleared at 1,477 with the shape detection's test armed (max 700 without).
    assert max(c for c in cleared if c is not None) < 1_000
