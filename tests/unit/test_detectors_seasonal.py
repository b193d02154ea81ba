"""The level by hour of day (detectors.seasonal): found when a daily cycle is there, and
only then."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.detectors.seasonal import HOURS, HourProfile, at_times, hours_of

DAY_S = 86_400


def day_stream(seed: int, days: float, amplitude: float, phi: float = 0.0) -> tuple:
    """A value every 4 s (times in us) on a log scale: sd 0.5, AR(1) ``phi``, and the
    level on a daily sine of ``amplitude``."""
    rng = np.random.default_rng(seed)
    t = np.arange(0, int(days * DAY_S), 4, dtype=np.int64) * 1_000_000
    e = rng.normal(size=t.shape[0])
    if phi:
        for i in range(1, e.shape[0]):
            e[i] = phi * e[i - 1] + math.sqrt(1 - phi * phi) * e[i]
    hour = (t / 3.6e9) % 24
    return t, 6.0 + amplitude * np.sin(2 * np.pi * hour / 24) + 0.5 * e


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("phi", [0.0, 0.5, 0.8])
def test_a_stream_without_a_daily_cycle_is_left_as_it_is(seed: int, phi: float) -> None:
    profile = HourProfile()
    t, y = day_stream(seed, 4, 0.0, phi)
    profile.learn(t, y)
    assert not profile.worth_using()


def test_a_daily_cycle_is_found_once_two_days_are_seen() -> None:
    t, y = day_stream(7, 3, 0.2)
    profile = HourProfile()
    half = int(1.5 * DAY_S / 4)
    profile.learn(t[:half], y[:half])
    assert not profile.worth_using()  # a day and a half: not yet
    profile.learn(t[half:], y[half:])
    assert profile.worth_using()
    middles = (np.arange(HOURS) + 0.5) / HOURS  # of each bin, in days
    truth = 0.2 * np.sin(2 * np.pi * middles)
    assert np.abs(profile.offsets() - truth).max() < 0.05
    # Corrected, the cycle is gone: each bin's mean sits within noise of the others.
    corrected = y - at_times(profile.offsets(), t)
    bins = hours_of(t)
    means = np.array([corrected[bins == b].mean() for b in range(HOURS)])
    assert means.std() < 0.02


def test_the_sums_are_halved_past_their_bound_and_keep_the_offsets() -> None:
    t, y = day_stream(3, 3, 0.2)
    profile = HourProfile()
    for _ in range(20):  # 1.3M values
        profile.learn(t, y)
    assert profile.n <= 1_000_000
    assert profile.worth_using()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 10**17),
            st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.just(1e308)),
        ),
        max_size=200,
    )
)
def test_any_input_keeps_the_profile_finite_and_its_state_restorable(
    points: list[tuple[int, float]],
) -> None:
    profile = HourProfile()
    times = np.array([p[0] for p in points], dtype=np.int64)
    values = np.array([p[1] for p in points], dtype=np.float64)
    profile.learn(times, values)
    profile.worth_using()
    offsets = profile.offsets()
    state = profile.to_state()
    assert np.all(np.isfinite(state["cells"])) and np.all(np.isfinite(offsets))
    restored = HourProfile.from_state(state)
    again = restored.to_state()
    assert np.array_equal(again["cells"], state["cells"]) and again["active"] == state["active"]


GOOD = HourProfile().to_state()


@pytest.mark.parametrize(
    "bad",
    [
        None,
        {**GOOD, "cells": np.zeros(10)},
        {**GOOD, "cells": np.full(GOOD["cells"].shape, np.inf)},
        {**GOOD, "cells": -np.ones(GOOD["cells"].shape)},
        {**GOOD, "active": 1},
        {**GOOD, "offsets": np.zeros(3)},
    ],
)
def test_a_broken_state_is_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        HourProfile.from_state(bad)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 3000), st.integers(1, 64))
def test_small_and_large_batches_sum_alike(seed: int, n: int, batch: int) -> None:
    rng = np.random.default_rng(seed)
    times = np.sort(rng.integers(0, 5 * DAY_S * 1_000_000, n))
    values = rng.normal(6.0, 1.0, n)
    whole, pieces = HourProfile(), HourProfile()
    whole.learn(times, values)
    for start in range(0, n, batch):
        pieces.learn(times[start : start + batch], values[start : start + batch])
    a, b = whole.to_state()["cells"], pieces.to_state()["cells"]
    assert np.allclose(a, b, rtol=1e-9, atol=1e-9)
