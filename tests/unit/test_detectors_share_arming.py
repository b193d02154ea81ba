"""A category's share test arms once its reference holds RATE_MIN_EVENTS of its labels.

A category the warm-up saw none of pools into "(other)" with a reference of zero; its
share member then alarmed at the first handful of a perfectly steady share.
"""

from __future__ import annotations

import numpy as np

from driftline.detectors.composite import MetricDetector


def _detections(labels: list[str]) -> list[tuple[int, str]]:
    det = MetricDetector("categorical", warmup=500, window=500, arl0=1e7)
    found = []
    for start in range(0, len(labels), 100):
        found += [(start + d.index, d.test) for d in det.update_many(labels[start : start + 100])]
    return found


def _steady_mix_the_warmup_missed(rng: np.random.Generator, n: int, p_length: float) -> list[str]:
    warm = rng.choice(["stop", "tool_calls"], 500, p=[0.7, 0.3])  # drew no `length`
    rest = rng.choice(["stop", "tool_calls", "length"], n, p=[0.7 - p_length, 0.3, p_length])
    return [str(v) for v in (*warm, *rest)]


def test_a_steady_category_the_warmup_missed_does_not_alarm() -> None:
    # Before: the share member alarmed on 6 of these 10 streams.
    alarmed = [
        seed
        for seed in range(10)
        if _detections(_steady_mix_the_warmup_missed(np.random.default_rng(seed), 8_000, 0.01))
    ]
    assert alarmed == []


def test_its_later_rise_is_found_once_the_reference_has_learned_it() -> None:
    delays = []
    for seed in range(5):
        rng = np.random.default_rng(100 + seed)
        labels = _steady_mix_the_warmup_missed(rng, 4_000, 0.01)
        change = len(labels)
        labels += [
            str(v) for v in rng.choice(["stop", "tool_calls", "length"], 4_000, p=[0.65, 0.3, 0.05])
        ]
        after = [i - change for i, _ in _detections(labels) if i >= change]
        assert after, seed
        delays.append(after[0])
    assert max(delays) < 2_000, delays
