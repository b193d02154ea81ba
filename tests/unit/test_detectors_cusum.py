"""CUSUM bank: exact detection indices on seeded streams, batch == one-by-one, budgets."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.detectors import CUSUM, cusum_bank_rows, cusum_rows


def detected(detector: CUSUM, stream: np.ndarray) -> list[int]:
    found = []
    for i, x in enumerate(stream):
        detector.update(float(x))
        if detector.drift_detected:
            found.append(i)
    return found


def shifted(seed: int, n_before: int, n_after: int, shift: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(0, 1, n_before), rng.normal(shift, 1, n_after)])


def test_detects_upward_shift_at_known_index() -> None:
    stream = shifted(42, 1500, 1000, 0.5)
    assert detected(CUSUM(warmup=500, arl0=1e5), stream) == [1749, 2013, 2126, 2213, 2318, 2445]


def test_detects_downward_shift_at_known_index() -> None:
    stream = shifted(1, 1000, 300, -1.0)
    found = detected(CUSUM(warmup=500, arl0=1e5), stream)
    assert found[:3] == [1015, 1047, 1076]
    assert all(i >= 1000 for i in found)


def test_batch_form_matches_one_by_one() -> None:
    stream = shifted(42, 1500, 1000, 0.5)
    batched = CUSUM(warmup=500, arl0=1e5)
    found: list[int] = []
    for start in range(0, stream.shape[0], 333):
        found.extend(start + i for i in batched.update_many(stream[start : start + 333]))
    assert found == detected(CUSUM(warmup=500, arl0=1e5), stream)


def test_flag_is_true_for_one_observation_then_resets() -> None:
    det = CUSUM(warmup=100, arl0=1e4)
    det.update_many(np.random.default_rng(3).normal(size=100))
    flags = []
    for _ in range(20):
        det.update(25.0)
        flags.append(det.drift_detected)
    first = flags.index(True)
    assert flags[first + 1] is False  # reset after the detection
    assert 0 < first < 10
    det.update(0.0)
    assert det.drift_detected is False


def test_poisson_counts_detect_retry_storm() -> None:
    rng = np.random.default_rng(8)
    counts = np.concatenate([rng.poisson(0.1, 2000), rng.poisson(0.6, 500)])
    found = CUSUM(warmup=500, arl0=1e6, model="poisson").update_many(counts)
    assert found and 2000 <= found[0] < 2100


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"warmup": 5}, "warmup"),
        ({"shifts": (0.5, -1.0)}, "shifts"),
        ({"arl0": 1.0}, "arl0"),
        ({"model": "gamma"}, "model"),
        ({"guard": -1.0}, "guard"),
    ],
)
def test_constructor_arguments_are_range_checked(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CUSUM(**kwargs)


def test_rows_form_matches_single_stream_scan() -> None:
    rng = np.random.default_rng(4)
    z = rng.normal(size=(3, 400))
    z[2, 200:] += 2.0
    state = np.zeros(3)
    found = cusum_rows(z, state, np.full(3, 0.5), np.full(3, 8.0))
    assert {row for row, _ in found} == {2}
    first = min(i for row, i in found if row == 2)
    assert 200 <= first < 230


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_stationary_stream_stays_within_false_alarm_budget(seed: int) -> None:
    # The stream continues the warm-up's own (heavy-tailed) distribution, the world the
    # calibration promises ARL0 for. ARL0 1e6 over 20k events: expected 0.02 alarms.
    # (How often an unlucky warm-up breaks the budget is measured in bench/.)
    rng = np.random.default_rng(seed)
    warm = 5.0 + 0.7 * rng.standard_t(3, 500)
    stream = np.concatenate([warm, rng.choice(warm, 20_000)])
    assert len(CUSUM(warmup=500, arl0=1e6).update_many(stream)) <= 1


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), direction=st.sampled_from([-1.0, 1.0]))
def test_large_shift_is_detected_quickly(seed: int, direction: float) -> None:
    rng = np.random.default_rng(seed)
    stream = np.concatenate([rng.normal(0, 1, 500), rng.normal(2.0 * direction, 1, 200)])
    found = CUSUM(warmup=500, arl0=1e6).update_many(stream)
    assert found and 500 <= found[0] < 560


def test_bank_rows_form_matches_per_stream_detectors() -> None:
    rng = np.random.default_rng(6)
    warm = rng.normal(size=500)
    proto = CUSUM(warmup=500, arl0=1e5)
    proto.update_many(warm)
    ref = proto.reference
    assert ref is not None
    raw = rng.normal(size=(3, 3000))
    raw[1, 1000:] += 0.6
    raw[2, 500:] -= 1.0
    values = raw * ref.scale + ref.mean
    state = np.zeros((3, 6))
    thresholds = np.tile(proto.thresholds, (3, 1))
    found = []
    for start in range(0, 3000, 700):
        z = ref.standardize(values[:, start : start + 700])
        batch = cusum_bank_rows(z, state, proto._directions, proto._drifts, thresholds)
        found.extend((row, start + i) for row, i in batch)
    for row in range(3):
        single = CUSUM(warmup=500, arl0=1e5)
        single.update_many(warm)
        assert [i for r, i in found if r == row] == single.update_many(values[row])
    assert [i for r, i in found if r == 0] == []
