"""The normalized request event and the trace summary: field names, types, order.

One event per LLM-call span (DESIGN.md, "Normalized request event"). Events move
between stages as plain dicts keyed by these names; this module is the one place
that says which names exist, their types, and how they look on the wire and in
Arrow (the ClickHouse sink and ``driftline normalize`` both use it).
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

FieldKind = Literal["str", "int", "float", "bool", "ts", "map"]


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    kind: FieldKind
    nullable: bool = False


EVENT_FIELDS: Final[tuple[Field, ...]] = (
    # identity
    Field("trace_id", "str"),
    Field("span_id", "str"),
    Field("parent_span_id", "str"),  # "" for a root span
    Field("start_ts", "ts"),  # microseconds since the Unix epoch, UTC
    Field("end_ts", "ts"),
    Field("service", "str"),
    Field("environment", "str"),
    Field("workflow", "str"),
    Field("agent", "str"),
    Field("tenant", "str"),
    Field("user_hash", "str"),
    Field("session_id", "str"),
    Field("route", "str"),
    # model
    Field("operation", "str"),
    Field("provider", "str"),
    Field("request_model", "str"),
    Field("response_model", "str"),
    # artifact bundle
    Field("model_version", "str"),
    Field("prompt_version", "str"),
    Field("retrieval_index_version", "str"),
    Field("router_version", "str"),
    Field("bundle_id", "str"),
    # usage and cost
    Field("input_tokens", "int"),
    Field("output_tokens", "int"),
    Field("cache_read_tokens", "int"),
    Field("cache_write_tokens", "int"),
    Field("reasoning_tokens", "int"),
    Field("cost_usd", "float", nullable=True),
    Field("price_source", "str"),
    # runtime
    Field("latency_ms", "float"),
    Field("ttft_ms", "float", nullable=True),
    Field("queue_ms", "float", nullable=True),
    Field("kv_cache_usage", "float", nullable=True),
    Field("retry_attempt", "int"),
    Field("loop_depth", "int"),
    Field("tool_calls", "int"),
    # output
    Field("finish_reason", "str"),
    Field("output_chars", "int", nullable=True),
    Field("validation_failed", "bool"),
    Field("error_type", "str"),
    Field("status", "str"),  # "ok" | "error" | "unset"
    Field("attributes", "map"),
)
EVENT_FIELD_NAMES: Final = tuple(f.name for f in EVENT_FIELDS)

TRACE_FIELDS: Final[tuple[Field, ...]] = (
    Field("trace_id", "str"),
    Field("workflow", "str"),
    Field("service", "str"),
    Field("environment", "str"),
    Field("tenant", "str"),
    Field("route", "str"),
    Field("root_span_id", "str"),
    Field("start_ts", "ts"),
    Field("end_ts", "ts"),
    Field("span_count", "int"),
    Field("llm_call_count", "int"),
    Field("max_loop_depth", "int"),
    Field("input_tokens", "int"),
    Field("output_tokens", "int"),
    Field("total_tokens", "int"),
    Field("cost_usd", "float", nullable=True),
    Field("unpriced_calls", "int"),
    Field("amplification", "float", nullable=True),  # trace tokens / first call's tokens
    Field("retries", "int"),
    Field("error_count", "int"),
    Field("closed_by", "str"),  # "root_end" | "timeout" | "flush" | "evicted" | "span_cap"
)
TRACE_FIELD_NAMES: Final = tuple(f.name for f in TRACE_FIELDS)

# Bound on the free-form attributes map carried with each event.
MAX_EVENT_ATTRIBUTES: Final = 32
MAX_ATTRIBUTE_VALUE_CHARS: Final = 256

# Names that reach dashboards, links and SQL (service, environment, workflow, agent, tenant,
# route, provider, models) hold only letters and digits of any script and ``_ - . : / @ + ~``
# and space: no quote, backslash or ``$`` that a dashboard variable's quoting could not carry.
# The normalizer makes other names safe; the dashboards' macro expander refuses them.
UNSAFE_NAME_CHAR: Final = re.compile(r"[^\w.:/@+~ -]")
# Identity values longer than this are rejected rather than truncated: a truncated model or
# workflow name would silently merge distinct series.
MAX_IDENTITY_CHARS: Final = 512

# Bounds on what one span may claim; a span beyond any of them is dead-lettered, so one bad
# value cannot reach a price, a detector's baseline or a rollup. Generous for real traffic:
# the largest context windows hold about 10M tokens, and no model call lasts a day.
MAX_TOKENS: Final = 100_000_000  # each token count, and output_chars
MAX_STEPS: Final = 1_000_000  # retry_attempt, tool_calls
MAX_CALL_SECONDS: Final = 86_400  # an LLM call's duration, TTFT and queue time
# Span times outside these are never real, whatever the arrival time: ClickHouse's TTL is a
# DateTime (up to 2106-02-07) plus up to 10 years of retention, so a later row would wrap.
EARLIEST_TIME_NS: Final = 946_684_800 * 10**9  # 2000-01-01T00:00:00Z
LATEST_TIME_NS: Final = 3_786_912_000 * 10**9  # 2090-01-01T00:00:00Z

PRICE_SOURCE_UNKNOWN: Final = "unknown"
PRICE_SOURCE_CONFIG: Final = "config"
PRICE_SOURCE_GENAI_PRICES: Final = "genai-prices"


def bundle_id(
    model: str,
    model_version: str,
    prompt_version: str,
    retrieval_index_version: str,
    router_version: str,
) -> str:
    """Stable 16-hex-digit id of what was validated together.

    >>> bundle_id("gpt-4o", "", "p3", "idx-7", "r1")
    '1b5333fe3ace7580'
    """
    joined = "\x1f".join(
        (model, model_version, prompt_version, retrieval_index_version, router_version)
    )
    return hashlib.blake2b(joined.encode(), digest_size=8).hexdigest()


_EPOCH: Final = datetime(1970, 1, 1)


def micros_to_iso(ts_us: int) -> str:
    """ISO 8601 UTC with microseconds, as ``driftline normalize`` prints timestamps.

    >>> micros_to_iso(1_767_225_600_000_123)
    '2026-01-01T00:00:00.000123Z'
    """
    seconds, micros = divmod(ts_us, 1_000_000)
    return f"{_second_prefix(seconds)}.{micros:06d}Z"


@functools.lru_cache(maxsize=65_536)
def _second_prefix(seconds: int) -> str:
    # Events of a batch share their seconds: formatting each second once is most of the cost.
    return (_EPOCH + timedelta(seconds=seconds)).isoformat(timespec="seconds")


def iso_to_micros(text: str) -> int:
    """Inverse of :func:`micros_to_iso`; also accepts offsets like ``+00:00``.

    >>> iso_to_micros("2026-01-01T00:00:00.000123Z"), iso_to_micros("2026-01-01T01:00:00+01:00")
    (1767225600000123, 1767225600000000)
    """
    if len(text) == 27 and text[19] == "." and text[26] == "Z":  # what micros_to_iso writes
        return _prefix_seconds(text[:19]) * 1_000_000 + int(text[20:26])
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - _EPOCH.replace(tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@functools.lru_cache(maxsize=65_536)
def _prefix_seconds(prefix: str) -> int:
    delta = datetime.fromisoformat(prefix) - _EPOCH
    return delta.days * 86_400 + delta.seconds


_Plan = tuple[tuple[str, ...], tuple[str, ...], dict[str, Any]]
_PLANS: dict[int, tuple[tuple[Field, ...], _Plan]] = {}


def _plan(fields: tuple[Field, ...]) -> _Plan:
    """Field names, timestamp names and defaults of non-nullable fields, computed once.

    Looked up by identity: a cache keyed by the tuple hashed its 45 ``Field`` dataclasses on
    every record (1.4% of a worker's time in a profile of ``bench/bench_pipeline.py``).
    """
    known = _PLANS.get(id(fields))
    if known is not None and known[0] is fields:
        return known[1]
    names = tuple(f.name for f in fields)
    stamps = tuple(f.name for f in fields if f.kind == "ts")
    defaults = {f.name: _EMPTY[f.kind] for f in fields if not f.nullable}
    plan = (names, stamps, defaults)
    _PLANS[id(fields)] = (fields, plan)
    return plan


def internal(record: dict[str, Any], fields: tuple[Field, ...] = EVENT_FIELDS) -> dict[str, Any]:
    """``record`` with exactly the schema's fields (absent ones None), values as they are:
    what the stages publish to each other (no timestamp formatting, no parsing back).

    >>> record = internal({"span_id": "a", "start_ts": 5, "_early": True})
    >>> record["span_id"], record["start_ts"], record["trace_id"], "_early" in record
    ('a', 5, None, False)
    >>> tuple(record) == EVENT_FIELD_NAMES
    True
    """
    return {name: record.get(name) for name in _plan(fields)[0]}


def internal_copy(
    record: dict[str, Any], fields: tuple[Field, ...] = EVENT_FIELDS, marks: tuple[str, ...] = ()
) -> dict[str, Any]:
    """``record`` without the stages' ``marks`` as a new record: a plain copy when that
    leaves as many keys as the schema has fields (a stage's own record, already internal;
    0.3 us against 1.9 us for :func:`internal`), else :func:`internal`. Only the count is
    checked: a record of the schema's width with a foreign key in place of a field is
    copied as it is, so a caller takes input that is not its own through :func:`internal`
    or checks every field (``schemas.checks.record_problem``).

    >>> record = {name: None for name in EVENT_FIELD_NAMES} | {"_seq": [0, 1, 2]}
    >>> copied = internal_copy(record, marks=("_seq",))
    >>> tuple(copied) == EVENT_FIELD_NAMES, copied is record, "_seq" in record
    (True, False, True)
    >>> tuple(internal_copy({"span_id": "a", "other": 1})) == EVENT_FIELD_NAMES
    True
    """
    out = record.copy()
    for mark in marks:
        out.pop(mark, None)
    names = _plan(fields)[0]
    return out if len(out) == len(names) else {name: out.get(name) for name in names}


def span_keys(records: Iterable[dict[str, Any]]) -> set[tuple[str, str]]:
    """(trace id, span id) of each record: what names a span (span ids are unique within
    a trace only).

    >>> sorted(span_keys([{"trace_id": "t", "span_id": "a"}, {"trace_id": "u", "span_id": "a"}]))
    [('t', 'a'), ('u', 'a')]
    """
    return {(record["trace_id"], record["span_id"]) for record in records}


def to_wire(record: dict[str, Any], fields: tuple[Field, ...] = EVENT_FIELDS) -> dict[str, Any]:
    """A record as it is printed and published: timestamps as ISO 8601 strings."""
    names, stamps, _ = _plan(fields)
    out = {name: record.get(name) for name in names}
    for name in stamps:
        value = out[name]
        if isinstance(value, int):
            out[name] = micros_to_iso(value)
    return out


def from_wire(doc: dict[str, Any], fields: tuple[Field, ...] = EVENT_FIELDS) -> dict[str, Any]:
    """A published record back to internal form; unknown keys are ignored."""
    names, stamps, defaults = _plan(fields)
    out = {name: doc.get(name) for name in names}
    for name in stamps:
        value = out[name]
        if isinstance(value, str):
            out[name] = iso_to_micros(value)
    for name, empty in defaults.items():
        if out[name] is None:
            out[name] = empty
    return out


_EMPTY: Final[dict[str, Any]] = {
    "str": "",
    "int": 0,
    "float": 0.0,
    "bool": False,
    "ts": 0,
    "map": {},
}
