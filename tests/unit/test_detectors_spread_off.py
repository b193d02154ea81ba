"""A metric whose spread is not tested (input tokens): a wider spread alone raises
nothing and keeps nothing open, its level is still tested, and the choice survives a
snapshot and a re-baseline."""

from __future__ import annotations

import numpy as np

from driftline.config import DetectorSettings
from driftline.detectors import MetricDetector
from driftline.detectors.metrics import INPUT_TOKENS, METRICS, METRICS_BY_NAME
from driftline.streams.monitor.drift import DriftRules
from driftline.streams.monitor.snapshot import bundle_from_state, bundle_state


def wider(seed: int) -> np.ndarray:
    """2,000 values at sd 0.5, then 3,000 at sd 1.0 around the same mean."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(6.0, 0.5, 2000), rng.normal(6.0, 1.0, 3000)])


def fired_tests(det: MetricDetector, values: np.ndarray) -> set[str]:
    fired: set[str] = set()
    for start in range(0, values.shape[0], 250):
        fired |= {d.test for d in det.update_many(values[start : start + 250])}
    return fired


def test_a_wider_spread_is_found_only_where_spread_is_tested() -> None:
    tested = MetricDetector("continuous", warmup=500, window=500, arl0=1e7)
    untested = MetricDetector("continuous", warmup=500, window=500, arl0=1e7, spread=False)
    assert "cusum_spread" in fired_tests(tested, wider(3))
    assert "cusum_spread" not in fired_tests(untested, wider(3))
    assert tested.shift_holds()
    # The KS window may still see the shape; the spread's own hold keeps nothing open.
    assert untested._spread is None


def test_a_level_shift_is_still_found_without_the_spread_test() -> None:
    rng = np.random.default_rng(5)
    values = np.concatenate([rng.normal(6.0, 0.5, 2000), rng.normal(6.5, 0.5, 1000)])
    det = MetricDetector("continuous", warmup=500, window=500, arl0=1e7, spread=False)
    assert "cusum" in fired_tests(det, values)


def test_the_choice_survives_a_snapshot_and_a_rebaseline() -> None:
    det = MetricDetector("continuous", warmup=500, window=500, arl0=1e7, spread=False)
    fired_tests(det, wider(7)[:1500])
    restored = MetricDetector.from_state(det.to_state())
    assert restored._spread is None and not restored._tests_spread
    restored.rebaseline()
    fired_tests(restored, wider(8)[:1000])
    assert restored.frozen and restored._spread is None


def test_a_snapshot_from_before_the_choice_tests_spread() -> None:
    det = MetricDetector("continuous", warmup=500, window=500, arl0=1e7)
    fired_tests(det, wider(9)[:1000])
    state = det.to_state()
    del state["args"]["spread"]
    assert MetricDetector.from_state(state)._spread is not None


def test_only_input_tokens_leave_their_spread_untested() -> None:
    assert not METRICS_BY_NAME[INPUT_TOKENS].spread
    assert all(m.spread for m in METRICS if m.name != INPUT_TOKENS)
    bundle = DriftRules(DetectorSettings())._new_bundle(0)
    tested = {name: d._tests_spread for name, d in bundle.detectors.items()}
    assert tested == {m.name: m.spread for m in METRICS if m.name in tested}
    assert tested[INPUT_TOKENS] is False


def test_a_wider_spread_keeps_nothing_open_where_spread_is_untested() -> None:
    # The stay-open condition's spread part alone: no detection, no recovery test, the
    # level at the reference, the recent square far above its reference.
    for spread in (True, False):
        det = MetricDetector("continuous", warmup=500, window=500, arl0=1e7, spread=spread)
        fired_tests(det, wider(11)[:1500])
        det._since_detection, det._recovery, det._level = 10**9, (0.0,) * 4 + (-1.0,), 0.0
        det._square = 100.0 * det._hold[0]
        assert det.shift_holds() is spread


def test_a_restart_stops_the_spread_test_of_a_snapshot_from_before() -> None:
    # A bundle saved while input tokens' spread was tested (as every snapshot before).
    settings = DetectorSettings()
    bundle = DriftRules(settings)._new_bundle(0)
    old = MetricDetector("continuous", settings.warmup_events, settings.window_events, 1e7)
    fired_tests(old, wider(12)[:1000])
    assert old._spread is not None
    bundle.detectors[INPUT_TOKENS] = old
    shapes = {name: (d.warmup, d.window) for name, d in bundle.detectors.items()}
    restored = bundle_from_state(bundle_state(bundle), "b", shapes, settings.window_events)
    after = restored.detectors[INPUT_TOKENS]
    assert after._spread is None and not after._tests_spread
    assert MetricDetector.from_state(after.to_state())._spread is None
    after.rebaseline()
    assert not after._tests_spread
