"""A metric steadier than the tolerance (a fixed prompt's input tokens vary by 0.5%) is
judged in units of the tolerance: a large shift is found by the level tests and holds
while it lasts, and a change within the tolerance raises no level alarm."""

from __future__ import annotations

import numpy as np
import pytest

from driftline.detectors import MetricDetector
from driftline.detectors.composite import LEVEL_MIN_SCALE


def fixed_prompt(n: int, factor: float, shift_at: int) -> np.ndarray:
    tokens = 400.0 + np.arange(n) % 7
    tokens[shift_at:] *= factor
    return np.log1p(tokens)


def feed(det: MetricDetector, values: np.ndarray) -> list[tuple[int, str]]:
    found = []
    for start in range(0, values.shape[0], 50):
        found += [(start + d.index, d.test) for d in det.update_many(values[start : start + 50])]
    return found


@pytest.mark.parametrize("spread", [True, False])
def test_a_new_prompt_four_times_longer_is_found_by_its_level_and_holds(spread: bool) -> None:
    det = MetricDetector("continuous", warmup=500, window=100, arl0=1e7, spread=spread)
    found = feed(det, fixed_prompt(3000, 4.0, shift_at=1500))
    assert ("cusum" in {test for _, test in found}) and min(i for i, _ in found) >= 1500
    assert det.shift_holds()  # 1,500 values into the shift: still open


def test_a_change_within_the_tolerance_raises_no_level_alarm() -> None:
    # The level tests only: the KS window (and the spread test, where tested) see any
    # change of so steady a distribution (docs/detection.md).
    det = MetricDetector("continuous", warmup=500, window=100, arl0=1e7, spread=False)
    found = {t for _, t in feed(det, fixed_prompt(4000, 1.02, shift_at=1500))}
    assert not found & {"cusum", "ewma"}


def test_the_floor_holds_from_the_freeze_on() -> None:
    # A shift right after the warm-up meets the first reference, before any regrowth.
    det = MetricDetector("continuous", warmup=500, window=100, arl0=1e7, spread=False)
    found = feed(det, fixed_prompt(800, 4.0, shift_at=500))
    assert det._ref is not None and det._ref.scale >= LEVEL_MIN_SCALE
    assert "cusum" in {t for _, t in found}
