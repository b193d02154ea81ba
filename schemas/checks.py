"""Whether a record read back from an internal topic has the types its fields promise.

``llm_events`` is written by driftline's own decode stage, but anyone who can write the
topic can put anything there; the store and the monitor trust the field kinds
(:data:`~driftline.schemas.event.EVENT_FIELDS`) when they build Arrow columns and feed
detectors. :func:`record_problem` is the one check between the two: a value of the wrong
type, a negative or non-finite number, an integer past Int64, a map of non-strings, or a
missing non-nullable value. It is a loop of ``type()`` tests over a precomputed plan, a few
microseconds per record.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Final

from driftline.schemas.event import (
    EARLIEST_TIME_NS,
    EVENT_FIELDS,
    LATEST_TIME_NS,
    MAX_CALL_SECONDS,
    MAX_IDENTITY_CHARS,
    MAX_STEPS,
    MAX_TOKENS,
    Field,
)

__all__ = ["event_problem", "record_problem", "trace_times_problem"]

MAX_INT: Final = 2**63 - 1
# Accepted Python types per field kind, as JSON decodes them (a float field may arrive as
# an integer: JSON does not tell 3 from 3.0). bool is not an int here.
_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "str": (str,),
    "int": (int,),
    "float": (float, int),
    "bool": (bool,),
    "ts": (int,),
    "map": (dict,),
}


@dataclass(frozen=True, slots=True)
class _Plan:
    fields: tuple[tuple[str, tuple[type, ...], bool, str], ...]
    values: Callable[[Mapping[str, Any]], tuple[Any, ...]]  # every field's value, in order
    numbers: Callable[[Mapping[str, Any]], tuple[Any, ...]]  # the int, ts and float fields
    maps: tuple[str, ...]
    # Type signatures (the type of each value, in order) already found acceptable: a record
    # of one of them needs only the range checks. Decode writes a handful of signatures.
    accepted: set[tuple[type, ...]]


_PLANS: dict[int, tuple[tuple[Field, ...], _Plan]] = {}


def _plan(fields: tuple[Field, ...]) -> _Plan:
    # By identity: hashing 45 Field dataclasses per record would cost more than the check.
    known = _PLANS.get(id(fields))
    if known is not None and known[0] is fields:
        return known[1]
    plan = _new_plan(fields)
    _PLANS[id(fields)] = (fields, plan)
    return plan


def _new_plan(fields: tuple[Field, ...]) -> _Plan:
    numeric = [f.name for f in fields if f.kind in ("int", "ts", "float")]
    return _Plan(
        fields=tuple((f.name, _TYPES[f.kind], f.nullable, f.kind) for f in fields),
        values=_getter([f.name for f in fields]),
        numbers=_getter(numeric),
        maps=tuple(f.name for f in fields if f.kind == "map"),
        accepted=set(),
    )


def _getter(names: list[str]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    get = itemgetter(*names)
    if len(names) == 1:
        return lambda record: (get(record),)
    return get


def record_problem(
    record: Any, fields: tuple[Field, ...] = EVENT_FIELDS, *, every_field: bool = False
) -> str | None:
    """Why ``record`` (internal form: timestamps as integer microseconds) cannot be used,
    or ``None``. With ``every_field``, a field absent from ``record`` is a problem even
    where its value may be None (a record taken as it is must hold every field).

    >>> from driftline.schemas.event import from_wire
    >>> good = from_wire({"span_id": "a", "input_tokens": 12, "latency_ms": 3})
    >>> record_problem(good) is None
    True
    >>> record_problem({**good, "input_tokens": "12"})
    'input_tokens: str where int belongs'
    >>> record_problem({**good, "latency_ms": -1.0})
    'latency_ms: negative'
    >>> record_problem({**good, "validation_failed": 1})
    'validation_failed: int where bool belongs'
    >>> record_problem([1, 2])
    'not an object: list'
    >>> lacking = {k: v for k, v in good.items() if k != "ttft_ms"}
    >>> record_problem(lacking), record_problem(lacking, every_field=True)
    (None, 'ttft_ms: absent')
    """
    if not isinstance(record, Mapping):
        return f"not an object: {type(record).__name__}"
    plan = _plan(fields)
    try:
        signature = tuple(map(type, plan.values(record)))
    except KeyError:
        if every_field:
            absent = next(name for name, *_ in plan.fields if name not in record)
            return f"{absent}: absent"
        return _first_problem(record, plan)
    if signature not in plan.accepted:
        problem = _first_problem(record, plan)
        if problem is None:
            plan.accepted.add(signature)
        return problem
    numbers = [v for v in plan.numbers(record) if v is not None]
    # One pass each in C: a sum that overflows to infinity is as unusable as an infinite
    # value (no field of a call is near 1e308), and NaN poisons the sum too.
    if numbers and (
        min(numbers) < 0 or max(numbers) > MAX_INT or not math.isfinite(float(sum(numbers)))
    ):
        return _first_problem(record, plan) or "numbers: out of range"
    for name in plan.maps:
        value = record[name]
        if value and not all(type(k) is str and type(v) is str for k, v in value.items()):
            return f"{name}: a map of strings expected"
    return None


def _first_problem(record: Mapping[str, Any], plan: _Plan) -> str | None:
    """The first field that is wrong, field by field (the slow path, and the message)."""
    for name, types, nullable, kind in plan.fields:
        value = record.get(name)
        if value is None:
            if nullable:
                continue
            return f"{name}: missing"
        if type(value) not in types:
            return f"{name}: {type(value).__name__} where {kind} belongs"
        if kind in ("int", "ts") and not 0 <= value <= MAX_INT:
            return f"{name}: out of range"
        if kind == "float" and not (math.isfinite(value) and 0 <= value <= MAX_INT):
            return f"{name}: {'negative' if value < 0 else 'not finite'}"
        if kind == "map" and not all(type(k) is str and type(v) is str for k, v in value.items()):
            return f"{name}: a map of strings expected"
    return None


# --- what the normalizer guarantees ----------------------------------------------------------

# Names the normalizer makes safe (dashboards, links and SQL carry them).
SAFE_NAME_FIELDS: Final = (
    "service",
    "environment",
    "workflow",
    "agent",
    "tenant",
    "route",
    "provider",
    "request_model",
    "response_model",
)
_TOKEN_FIELDS: Final = (
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "output_chars",
)
_STEP_FIELDS: Final = ("retry_attempt", "loop_depth", "tool_calls")
_TEXT_FIELDS: Final = tuple(f.name for f in EVENT_FIELDS if f.kind == "str")
_TOKEN_TOTAL_FIELDS: Final = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)
# The most a call can cost: a per-call fee (search, tools, images) plus every token at the
# highest price the configuration accepts (``config.MAX_PRICE_PER_MTOK``, $1M per million
# tokens, far above any list price). Costs are worked out by the pipeline's price book; a
# cost read from a file is held to this, so one line cannot blow up a sum.
MAX_CALL_FEE_USD: Final = 10.0
MAX_USD_PER_TOKEN: Final = 1.0
# A name made safe gains "~" and 8 hex digits (``streams.normalize.safe_name``).
MAX_SAFE_NAME_CHARS: Final = MAX_IDENTITY_CHARS + 9
_MILLISECOND_FIELDS: Final = ("latency_ms", "ttft_ms", "queue_ms")
STATUSES: Final = frozenset({"ok", "error", "unset"})


def trace_times_problem(record: Any) -> str | None:
    """Why a trace summary's times (internal form, microseconds) are none a trace could have,
    or ``None``: the window events are held to, and no end before the start.

    >>> trace_times_problem({"start_ts": 1_767_225_600_000_000, "end_ts": 1_767_225_601_000_000})
    >>> trace_times_problem({"start_ts": 1_767_225_601_000_000, "end_ts": 1_767_225_600_000_000})
    'start_ts, end_ts: outside 2000-2090 or ending before the start'
    """
    start, end = record["start_ts"], record["end_ts"]
    if not (EARLIEST_TIME_NS // 1000 <= start <= end < LATEST_TIME_NS // 1000):
        return "start_ts, end_ts: outside 2000-2090 or ending before the start"
    return None


def event_problem(record: Any) -> str | None:
    """Why an event read from outside the pipeline (an NDJSON file) is not one the normalizer
    could have written, or ``None``: :func:`record_problem`, then the bounds every span is held
    to on the way in (token counts, durations, KV usage, dates, name lengths, the status).
    Unsafe characters in names are not a problem here: the reader makes them safe as the
    normalizer does (``streams.normalize.safe_name``).

    >>> from driftline.schemas.event import from_wire
    >>> good = from_wire({"trace_id": "t", "span_id": "a", "start_ts": "2026-01-01T00:00:00Z",
    ...                   "end_ts": "2026-01-01T00:00:01Z", "status": "ok"})
    >>> event_problem(good) is None
    True
    >>> event_problem({**good, "kv_cache_usage": 7.5})
    'kv_cache_usage: 7.5 is not a fraction'
    >>> event_problem({**good, "workflow": "w" * 600})
    'workflow: longer than 521 characters'
    >>> event_problem({**good, "error_type": "E" * 600})
    'error_type: longer than 512 characters'
    >>> event_problem({**good, "span_id": ""})
    'trace_id, span_id: missing'
    >>> event_problem({**good, "input_tokens": 1000, "cost_usd": 9.2e18})
    'cost_usd: 9.2e+18 is more than any price gives for 1000 tokens'
    """
    problem = record_problem(record, EVENT_FIELDS)
    if problem is not None:
        return problem
    for name in _TOKEN_FIELDS:
        value = record[name]
        if value is not None and value > MAX_TOKENS:
            return f"{name}: {value} is over {MAX_TOKENS}"
    if record["input_tokens"] > 3 * MAX_TOKENS:  # cached tokens may be added to the input
        return f"input_tokens: {record['input_tokens']} is over {3 * MAX_TOKENS}"
    for name in _STEP_FIELDS:
        if record[name] > MAX_STEPS:
            return f"{name}: {record[name]} is over {MAX_STEPS}"
    for name in _MILLISECOND_FIELDS:
        value = record[name]
        if value is not None and value > MAX_CALL_SECONDS * 1000:
            return f"{name}: {value} ms is over a day"
    kv = record["kv_cache_usage"]
    if kv is not None and kv > 1.0:
        return f"kv_cache_usage: {kv} is not a fraction"
    start, end = record["start_ts"], record["end_ts"]
    earliest, latest = EARLIEST_TIME_NS // 1000, LATEST_TIME_NS // 1000
    if not (earliest <= start <= end < latest):
        return "start_ts, end_ts: outside 2000-2090 or ending before the start"
    if end - start > MAX_CALL_SECONDS * 1_000_000:
        return f"start_ts, end_ts: the call lasted {(end - start) / 1e6:.0f} s, over a day"
    if not record["trace_id"] or not record["span_id"]:
        return "trace_id, span_id: missing"
    for name in _TEXT_FIELDS:
        most = MAX_SAFE_NAME_CHARS if name in SAFE_NAME_FIELDS else MAX_IDENTITY_CHARS
        if len(record[name]) > most:
            return f"{name}: longer than {most} characters"
    cost = record["cost_usd"]
    if cost is not None:
        tokens = sum(record[name] for name in _TOKEN_TOTAL_FIELDS)
        if cost > MAX_CALL_FEE_USD + MAX_USD_PER_TOKEN * tokens:
            return f"cost_usd: {cost:.6g} is more than any price gives for {tokens} tokens"
    if record["status"] and record["status"] not in STATUSES:
        return f"status: {record['status'][:20]!r} is not one of {sorted(STATUSES)}"
    return None
