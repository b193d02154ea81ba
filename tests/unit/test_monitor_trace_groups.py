"""The monitor's trace codes, which the detectors use as clusters (detectors/one_trace.py)."""

from __future__ import annotations

import numpy as np

from driftline.detectors import METRICS
from driftline.streams.monitor.drift import _Columns


def test_calls_without_a_trace_id_are_not_one_trace() -> None:
    events = [{"trace_id": t, "error_type": ""} for t in ("", "", "a", "a", None, "b")]
    codes = _Columns(events, METRICS).trace_groups(np.arange(len(events))).tolist()
    assert codes[2] == codes[3]  # one trace
    assert len({codes[0], codes[1], codes[4], codes[2], codes[5]}) == 5
