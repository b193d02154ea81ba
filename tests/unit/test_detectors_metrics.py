"""The monitored signals on their natural scale."""

from __future__ import annotations

import numpy as np

from driftline.detectors.metrics import METRICS_BY_NAME, RETRIES


def test_each_retry_counts_once_whatever_its_ordinal() -> None:
    # A call retried twice is three spans, tries 0, 1 and 2: two retries, not 0 + 1 + 2.
    tries = np.array([0.0, 1.0, 2.0, 0.0, 0.0, 1.0])
    counted = METRICS_BY_NAME[RETRIES].natural(tries)
    assert counted.tolist() == [0.0, 1.0, 1.0, 0.0, 0.0, 1.0]
    assert counted.sum() == 3.0  # three retries in two calls


def test_a_failed_try_is_measured_for_retries_only() -> None:
    failed = {"retry_attempt": 1, "error_type": "RateLimitError", "output_tokens": 0}
    assert METRICS_BY_NAME[RETRIES].raw_value(failed) == 1.0
    assert METRICS_BY_NAME["output_tokens"].raw_value(failed) is None
