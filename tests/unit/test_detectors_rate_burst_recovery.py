"""A burst within a lasting rate shift does not weaken the shift's recovery test."""

from __future__ import annotations

import numpy as np

from driftline.detectors import MetricDetector


def first_resolve(seed: int) -> tuple[list[float], int | None]:
    """A 1% -> 3% rate with 12 failures in a row just after its first detection: the
    ratios that fired, and the first index where the shift no longer held (None: never)."""
    rng = np.random.default_rng(seed)
    rates = np.r_[np.full(4_000, 0.01), np.full(16_000, 0.03)]
    values = (rng.random(rates.shape[0]) < rates).astype(np.float64)
    det = MetricDetector("bernoulli", 500, 500, 2.7e7)
    ratios: list[float] = []
    for start in range(0, values.shape[0], 50):
        batch = values[start : start + 50].copy()
        if len(ratios) == 1:
            batch[:12] = 1.0  # the burst: the 6 member fires on it
        ratios.extend(float(d.evidence["rate_ratio"]) for d in det.update_many(batch))
        if ratios and not det.shift_holds():
            return ratios, start
    return ratios, None


def test_a_burst_in_a_lasting_shift_does_not_resolve_it() -> None:
    # Before: the 6 member's recovery test ("still at 4.3x" against "back") replaced the
    # 2.5 member's and sat at its break-even on a tripling: 14 of the 38 seeds checked
    # resolved the lasting shift (seed 0 at 6,850, 2,900 events after the change).
    checked = 0
    for seed in range(40):
        ratios, resolved = first_resolve(seed)
        if 6.0 not in ratios:
            continue  # the burst did not reach the 6 member: nothing to test here
        checked += 1
        assert resolved is None, (seed, ratios[:3], resolved)
    assert checked >= 20
