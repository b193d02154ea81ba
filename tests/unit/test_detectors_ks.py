"""KS window: exact indices, batch == one-by-one, window reset, budget, range checks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.detectors import KSWindow
from driftline.detectors.ks import ks_critical_value, ks_statistic


def detected(detector: KSWindow, stream: np.ndarray) -> list[int]:
    found = []
    for i, x in enumerate(stream):
        detector.update(float(x))
        if detector.drift_detected:
            found.append(i)
    return found


def variance_change(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(0, 1, 1500), rng.normal(0, 2, 1500)])


def test_detects_variance_change_at_known_indices() -> None:
    stream = variance_change(7)
    assert detected(KSWindow(500, 500, 50, 1e5), stream) == [1849, 2349, 2849]


def test_batch_form_matches_one_by_one() -> None:
    stream = variance_change(7)
    det = KSWindow(500, 500, 50, 1e5)
    found: list[int] = []
    for start in range(0, stream.shape[0], 170):
        found.extend(start + i for i in det.update_many(stream[start : start + 170]))
    assert found == [1849, 2349, 2849]


def test_window_values_are_in_arrival_order() -> None:
    det = KSWindow(20, 20, 5, 1e4)
    det.update_many(np.arange(20.0))
    assert det.window_values() is None
    det.update_many(np.arange(100.0, 125.0))
    window = det.window_values()
    assert window is not None
    assert window.tolist() == list(np.arange(105.0, 125.0))


def test_statistic_matches_definition() -> None:
    ref = np.sort(np.array([1.0, 2.0, 3.0, 4.0]))
    assert ks_statistic(ref, np.array([3.5, 4.5, 5.0, 6.0])) == pytest.approx(0.75)
    assert ks_critical_value(500, 500, 0.05, inflation=4.0) == pytest.approx(
        2 * ks_critical_value(500, 500, 0.05)
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((10, 500, 50, 1e5), "warmup"),
        ((500, 10, 5, 1e5), "window"),
        ((500, 500, 600, 1e5), "stride"),
        ((500, 500, 50, 40), "arl0"),
    ],
)
def test_constructor_arguments_are_range_checked(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        KSWindow(*args)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_stationary_stream_stays_within_false_alarm_budget(seed: int) -> None:
    rng = np.random.default_rng(seed)
    stream = rng.lognormal(6.0, 0.5, 20_500)
    assert len(KSWindow(500, 500, 100, 1e6).update_many(np.log1p(stream))) <= 1


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_shape_change_is_detected(seed: int) -> None:
    rng = np.random.default_rng(seed)
    stream = np.concatenate([rng.normal(0, 1, 1000), rng.normal(0, 3, 1000)])
    found = KSWindow(500, 500, 100, 1e6).update_many(stream)
    assert found and 1000 <= found[0] < 1700


@pytest.mark.parametrize("seed", range(10))
def test_restart_forgets_the_window(seed: int) -> None:
    # A window 300 values into a 0.8 sd shift, then back: left as it is, the test at the
    # full window finds the shift's values; restarted when the shift ended, it tests
    # only values from after, and a window of them later.
    rng = np.random.default_rng(seed)
    reference = rng.normal(0.0, 1.0, 500)
    shifted = 0.8 + rng.normal(0.0, 1.0, 300)
    back = rng.normal(0.0, 1.0, 500)
    kept, restarted = KSWindow(500, 500, 100, 1e5), KSWindow(500, 500, 100, 1e5)
    for det in (kept, restarted):
        det.update_many(reference)
        assert det.update_many(shifted) == []  # the window is not full yet
    restarted.restart()
    assert kept.update_many(back) == [199]
    assert restarted.update_many(back) == []
    assert restarted.score() > 0.0  # it has tested: a full window of values from after
