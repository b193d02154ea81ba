"""A lasting rise of one category's share stays open, whichever share member found it.

A larger member (the 6x one) fires by chance within a smaller shift; its recovery test,
"still at two thirds of 6x" against "back", then sat near the shift itself and resolved a
tripled `length` share while it lasted (bench/bench_replay.py seed 62: resolved with the
window at 3.5 times the reference, reopened 18 minutes later). Here, on the code before:
6 of these 40 streams resolved while the shift lasted.
"""

from __future__ import annotations

import numpy as np

from driftline.detectors.composite import MetricDetector

CATEGORIES = ["stop", "tool_calls", "length"]
BURST = 14


def first_resolve(seed: int) -> tuple[list[float], int | None]:
    """``length`` 2% -> 6% lasting 16,000 calls, after a 4,000-call steady stretch: the
    ratios that fired, and the first call where the shift no longer held (None: never)."""
    rng = np.random.default_rng(seed)
    before = rng.choice(CATEGORIES, 4_000, p=[0.45, 0.53, 0.02])
    after = rng.choice(CATEGORIES, 16_000, p=[0.45, 0.49, 0.06])
    after[:BURST] = "length"  # a burst as the shift begins: a large member may fire first
    labels = [str(v) for v in (*before, *after)]
    det = MetricDetector("categorical", warmup=500, window=500, arl0=2.7e7)
    ratios: list[float] = []
    for start in range(0, len(labels), 50):
        found = det.update_many(labels[start : start + 50])
        ratios += [float(d.evidence["rate_ratio"]) for d in found if "rate_ratio" in d.evidence]
        if start >= 4_000 and (ratios or found) and not det.shift_holds():
            return ratios, start
    return ratios, None


def test_a_tripled_share_that_lasts_is_never_resolved() -> None:
    resolved, first = {}, []
    for seed in range(40):
        ratios, at = first_resolve(seed)
        first.append(ratios[0] if ratios else None)
        if at is not None:
            resolved[seed] = (ratios[:3], at)
    assert resolved == {}, resolved
    assert sum(r is not None and r >= 6.0 for r in first) >= 30, first  # the case in point
