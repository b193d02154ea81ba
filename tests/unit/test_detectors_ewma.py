"""EWMA creep detector: exact index on a seeded creep, batch == one-by-one, checks."""

from __future__ import annotations

import numpy as np
import pytest

from driftline.detectors import EWMA
from driftline.detectors._kernels import ewma_filter


def creep(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(0, 1, 1000), rng.normal(np.linspace(0, 1, 3000), 1)])


def test_detects_creep_at_known_index() -> None:
    assert EWMA(warmup=1000, lam=0.02, arl0=1e5).update_many(creep(3))[:1] == [2050]


def test_batch_form_matches_one_by_one() -> None:
    stream = creep(3)
    one = EWMA(warmup=1000, lam=0.02, arl0=1e5)
    found = []
    for i, x in enumerate(stream):
        one.update(float(x))
        if one.drift_detected:
            found.append(i)
    assert found == EWMA(warmup=1000, lam=0.02, arl0=1e5).update_many(stream)


def test_filter_matches_recursion_over_long_inputs() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=5000)
    expected = np.empty_like(x)
    y = 0.3
    for i, v in enumerate(x):
        y = 0.99 * y + 0.01 * v
        expected[i] = y
    assert np.allclose(ewma_filter(x, 0.01, 0.3), expected, atol=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"warmup": 3}, "warmup"),
        ({"lam": 0.0}, "lam"),
        ({"lam": 1.5}, "lam"),
        ({"arl0": 0.5}, "arl0"),
    ],
)
def test_constructor_arguments_are_range_checked(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EWMA(**kwargs)
