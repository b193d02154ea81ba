"""What every normalized event must satisfy, whatever span it came from (schemas/event.py)."""

from __future__ import annotations

import fnmatch
import json
import math
from typing import Any

from driftline.schemas import attributes as a
from driftline.schemas.checks import SAFE_NAME_FIELDS
from driftline.schemas.event import (
    EARLIEST_TIME_NS,
    EVENT_FIELD_NAMES,
    LATEST_TIME_NS,
    MAX_ATTRIBUTE_VALUE_CHARS,
    MAX_CALL_SECONDS,
    MAX_EVENT_ATTRIBUTES,
    MAX_STEPS,
    MAX_TOKENS,
    UNSAFE_NAME_CHAR,
)

TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)
STEP_FIELDS = ("retry_attempt", "tool_calls")
MILLIS_FIELDS = ("latency_ms", "ttft_ms", "queue_ms")
# Names that reach dashboards, links and SQL (schemas/event.py, UNSAFE_NAME_CHAR).
NAME_FIELDS = SAFE_NAME_FIELDS
_MAX_CALL_MS = MAX_CALL_SECONDS * 1000.0


def strict_json(value: Any) -> str:
    """JSON a strict parser accepts: no NaN or infinity anywhere (PagerDuty refuses them)."""
    text = json.dumps(value, allow_nan=False, default=str)
    json.loads(text, parse_constant=_refuse_constant)
    return text


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _kept_by_default(key: str) -> bool:
    return key.startswith(a.ORIGINAL_NAME_PREFIX) or any(
        fnmatch.fnmatchcase(key, pattern) for pattern in a.DEFAULT_ATTRIBUTES_ALLOW
    )


def check_event(event: dict[str, Any], window_ns: tuple[int, int] | None = None) -> None:
    """Bounded finite numbers, safe names, allowed attributes only, times in the window."""
    assert tuple(event) == EVENT_FIELD_NAMES
    for name in TOKEN_FIELDS:
        assert type(event[name]) is int and 0 <= event[name] <= MAX_TOKENS, (name, event[name])
    if event["output_chars"] is not None:
        assert 0 <= event["output_chars"] <= MAX_TOKENS
    for name in STEP_FIELDS:
        assert type(event[name]) is int and 0 <= event[name] <= MAX_STEPS, (name, event[name])
    for name in MILLIS_FIELDS:
        value = event[name]
        if value is not None or name == "latency_ms":
            assert math.isfinite(value) and 0 <= value <= _MAX_CALL_MS, (name, value)
    kv = event["kv_cache_usage"]
    assert kv is None or (math.isfinite(kv) and 0.0 <= kv <= 1.0), kv
    cost = event["cost_usd"]
    assert cost is None or (math.isfinite(cost) and cost >= 0.0), cost
    for name in NAME_FIELDS:
        assert isinstance(event[name], str), name
        assert UNSAFE_NAME_CHAR.search(event[name]) is None, (name, event[name])
    earliest, latest = window_ns or (EARLIEST_TIME_NS, LATEST_TIME_NS)
    assert earliest // 1000 <= event["start_ts"] <= event["end_ts"] <= latest // 1000 + 1
    attributes = event["attributes"]
    assert len(attributes) <= MAX_EVENT_ATTRIBUTES
    for key, value in attributes.items():
        assert isinstance(key, str) and isinstance(value, str), (key, value)
        assert _kept_by_default(key), key
        assert len(value) <= MAX_ATTRIBUTE_VALUE_CHARS or key.startswith(a.ORIGINAL_NAME_PREFIX), (
            key
        )
