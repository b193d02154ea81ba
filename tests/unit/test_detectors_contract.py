"""One contract for every drift detector: flag, batch == one-by-one, a seeded shift, state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from driftline.detectors import CUSUM, EWMA, CategoricalShift, KSWindow, RateCUSUM
from driftline.detectors.base import DriftDetector

LABELS = np.array(["stop", "length", "tool_calls"])


def _numeric(seed: int, n_before: int, n_after: int) -> list[Any]:
    rng = np.random.default_rng(seed)
    return list(np.concatenate([rng.normal(0, 1, n_before), rng.normal(1.5, 1, n_after)]))


def _failures(seed: int, n_before: int, n_after: int) -> list[Any]:
    rng = np.random.default_rng(seed)
    return list(np.r_[rng.random(n_before) < 0.02, rng.random(n_after) < 0.12].astype(float))


def _labels(seed: int, n_before: int, n_after: int) -> list[Any]:
    rng = np.random.default_rng(seed)
    before = rng.choice(LABELS, n_before, p=[0.9, 0.07, 0.03])
    after = rng.choice(LABELS, n_after, p=[0.6, 0.37, 0.03])
    return [str(v) for v in np.concatenate([before, after])]


# (factory, stream with a change at index 1000)
CASES: dict[str, tuple[Callable[[], DriftDetector], Callable[[int, int, int], list[Any]]]] = {
    "cusum": (lambda: CUSUM(warmup=300, arl0=1e5), _numeric),
    "ewma": (lambda: EWMA(warmup=300, lam=0.05, arl0=1e5), _numeric),
    "ks": (lambda: KSWindow(warmup=300, window=200, stride=20, arl0=1e5), _numeric),
    "categorical": (lambda: CategoricalShift(300, 200, 20, 1e5), _labels),
    "rate": (lambda: RateCUSUM(warmup=300, arl0=1e5), _failures),
}


def one_by_one(det: DriftDetector, stream: list[Any]) -> list[int]:
    found = []
    for i, x in enumerate(stream):
        det.update(x)
        if det.drift_detected:
            found.append(i)
    return found


def batched(det: DriftDetector, stream: list[Any], size: int) -> list[int]:
    found: list[int] = []
    for start in range(0, len(stream), size):
        found.extend(start + i for i in det.update_many(stream[start : start + size]))
    return found


@pytest.mark.parametrize("name", sorted(CASES))
def test_seeded_shift_is_found_after_the_change_only(name: str) -> None:
    make, stream_of = CASES[name]
    found = batched(make(), stream_of(5, 1000, 1500), 250)
    assert found, "a large shift went undetected"
    assert min(found) >= 1000
    assert min(found) < 1400


@pytest.mark.parametrize("name", sorted(CASES))
def test_update_many_equals_one_by_one(name: str) -> None:
    make, stream_of = CASES[name]
    stream = stream_of(8, 1000, 1500)
    expected = one_by_one(make(), stream)
    assert expected
    for size in (1, 7, 333, len(stream)):
        assert batched(make(), stream, size) == expected


@pytest.mark.parametrize("name", sorted(CASES))
def test_flag_is_true_once_then_resets(name: str) -> None:
    make, stream_of = CASES[name]
    det = make()
    flags = []
    for x in stream_of(9, 1000, 1500):
        det.update(x)
        flags.append(det.drift_detected)
    first = flags.index(True)
    assert flags[first + 1] is False
    assert det.last_detection["statistic"] > det.last_detection["threshold"]


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("cut", [150, 1100])  # during warm-up, and after a detection
def test_state_round_trip_continues_exactly(name: str, cut: int) -> None:
    make, stream_of = CASES[name]
    stream = stream_of(11, 1000, 1500)
    original = make()
    before = batched(original, stream[:cut], 97)
    restored = type(original).from_state(original.to_state())
    assert restored.drift_detected == original.drift_detected
    rest = stream[cut:]
    assert batched(restored, rest, 97) == batched(original, rest, 97)
    assert before == [i for i in one_by_one(make(), stream) if i < cut]


@pytest.mark.parametrize("name", sorted(CASES))
def test_constructor_arguments_are_range_checked(name: str) -> None:
    make, _ = CASES[name]
    state = make().to_state()
    state["args"]["warmup"] = 3
    with pytest.raises(ValueError, match="warmup"):
        type(make()).from_state(state)


@pytest.mark.parametrize("name", sorted(CASES))
def test_corrupt_state_names_the_field(name: str) -> None:
    make, stream_of = CASES[name]
    det = make()
    det.update_many(stream_of(2, 1000, 100))
    state = det.to_state()
    for field, spec in det._STATE.items():
        wrong: Any = np.array(["x"]) if spec.kind != "plain" else {"x": object()}
        with pytest.raises(ValueError, match=field):
            type(det).from_state({**state, field: wrong})
        if spec.kind == "array" and spec.dtype.startswith("float") and state[field] is not None:
            nan = np.full_like(state[field], np.nan)
            with pytest.raises(ValueError, match=field):
                type(det).from_state({**state, field: nan})
    bad = dict(state)
    del bad["last"]
    with pytest.raises(ValueError, match="last"):
        type(det).from_state(bad)
    with pytest.raises(ValueError, match="state is for"):
        type(det).from_state({**state, "class": "Other"})
