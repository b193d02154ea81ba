"""The fuzzers' own checks catch what they are meant to catch (a check that passes anything
would make every fuzzer pass)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from driftline.streams.normalize import normalize_message
from tests.fuzz.checks import check_event, strict_json
from tests.fuzz.strategies import ARRIVAL_NS
from tests.utils import otlp_factory as f

pytestmark = pytest.mark.fuzz


def _clean_event() -> dict[str, Any]:
    span = f.make_span(
        trace_id=b"\x01" * 16,
        span_id=b"\x02" * 8,
        start_ns=ARRIVAL_NS - 10**9,
        attributes={**f.semconv_chat_attributes(), **f.driftline_attributes()},
    )
    message = f.traces_data(f.make_resource_spans([span]))
    (event,) = normalize_message(message.SerializeToString(), arrival_ns=ARRIVAL_NS).events
    return event


def test_a_clean_event_passes() -> None:
    check_event(_clean_event())


@pytest.mark.parametrize(
    "changes",
    [
        {"input_tokens": -1},
        {"output_tokens": 100_000_001},
        {"latency_ms": math.nan},
        {"ttft_ms": math.inf},
        {"kv_cache_usage": 1.5},
        {"cost_usd": -0.01},
        {"workflow": "zz' OR 1=1 --"},
        {"response_model": "a\\"},
        {"start_ts": 10**18},
        {"attributes": {"input.value": "the prompt"}},
        {"attributes": {"gen_ai.usage.input_tokens": "x" * 300}},
    ],
)
def test_an_out_of_bounds_event_fails(changes: dict[str, Any]) -> None:
    event = _clean_event()
    event.update(changes)
    with pytest.raises(AssertionError):
        check_event(event)


def test_strict_json_refuses_nan_and_infinity() -> None:
    for bad in (math.nan, math.inf, {"score": -math.inf}, [1.0, math.nan]):
        with pytest.raises(ValueError):
            strict_json(bad)
    assert strict_json({"score": 1.5}) == '{"score": 1.5}'
