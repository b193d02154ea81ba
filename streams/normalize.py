"""Normalize one OTLP traces message into request events, span records and rejects.

The ingestion hot path. :func:`normalize_message` turns a Kafka message from the
collector into:

- ``events``: one dict per LLM-call span, keyed exactly by ``schemas.event.EVENT_FIELD_NAMES``;
- ``spans``: one record per span of any kind (:data:`SPAN_RECORD_FIELDS`), for trace assembly;
- ``rejects``: spans (or the whole message) that cannot be trusted, each with the bytes to
  dead-letter so nothing is lost.

It never raises. Attribute precedence follows DESIGN.md through the tuples in
:mod:`schemas.attributes`: the first key present with a non-empty value wins, and only the
winning value is type-checked. Later stages fill ``cost_usd``/``price_source`` (pricing),
``loop_depth`` and the workflow fallbacks (trace assembly).

Choices the contract left open:

- vLLM's ``llm_request`` span has no operation; it is recorded as ``chat``: vLLM serves chat
  and text completions under the same span name, chat is the common case, and both are
  priced per token alike.
- A span with token counts and a model but no operation is an LLM call with operation ``""``.
- ``driftline.tenant``, ``driftline.route`` and the four bundle version keys fall back to the
  resource attributes when the span lacks them (a deployment-wide version is natural there).
- The ``attributes`` map holds strings: numbers and booleans as text, arrays and key-value
  lists as JSON. When more than ``max_attributes`` keys qualify, the alphabetically first
  are kept, so the result does not depend on wire order.
- A rejected span appears in neither ``events`` nor ``spans``.
- Reject payloads are in the encoding the message arrived in (protobuf or OTLP/JSON). They
  carry ids, times, status code and the attributes an event could keep, never content: span
  events, links, the status message and other attributes are left out, and a whole-message
  reject (``not_otlp``) has an empty payload, unless :class:`IngestPolicy` ``dlq_content``.

Instrumentations that depart from the conventions get a rule keyed by their instrumentation
scope (:mod:`schemas.instrumentations`), applied to the call after the mapping; so are the
corrections that need more than one key: the ``exception`` event's class when a failed call
names none, and the count of spans that look like LLM calls but carry no tokens
(``NormalizedBatch.tokenless``, by reason and scope; ``NormalizedBatch.counters`` gives the
worker's ``decode.tokenless.<reason>`` counters): successful calls without usage stay events,
and a span naming a model with neither an operation nor token counts is not taken for a call,
but none passes in silence.

What a span may claim is bounded (:class:`IngestPolicy`, :mod:`schemas.event`): times within
a window around the message's arrival (and 2000..2090 always), token counts, durations and
fractions within limits, no NaN or infinity. A span beyond a bound is rejected, never
clamped, so no price, baseline or rollup sees the value. Names that reach dashboards and SQL
(service, environment, workflow, agent, tenant, route, provider, models) keep to letters,
digits and ``_ - . : / @ + ~`` and space; any other character becomes ``_`` and a hash of the
original is appended (``~1a2b3c4d``), so distinct names stay distinct, and the original is
kept in ``attributes`` under ``driftline.original.<field>``. Free attributes are kept only
when their key is on the allow list (:data:`schemas.attributes.DEFAULT_ATTRIBUTES_ALLOW`).

Two paths give the same result. :func:`_normalize_span` reads the contract straightforwardly
and decides every reject. :func:`_normalize_span_fast` runs first and relies on repetition:
plans per attribute key set, a memo of everything derived from the low-cardinality values,
and caches keyed by encoded values; at the first doubt it hands the span to the exact path.
``tests/unit/test_normalize.py`` compares the output with a stored reference.
"""

from __future__ import annotations

import ast
import base64
import fnmatch
import functools
import hashlib
import json
import operator
import re
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any, Final, Literal

from google.protobuf import unknown_fields
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope
from opentelemetry.proto.trace.v1.trace_pb2 import Span as FullSpan

from driftline.schemas import attributes as a
from driftline.schemas.event import (
    EARLIEST_TIME_NS,
    LATEST_TIME_NS,
    MAX_ATTRIBUTE_VALUE_CHARS,
    MAX_CALL_SECONDS,
    MAX_EVENT_ATTRIBUTES,
    MAX_STEPS,
    MAX_TOKENS,
    UNSAFE_NAME_CHAR,
    bundle_id,
)
from driftline.schemas.instrumentations import (
    LOGFIRE_SPAN_TYPE,
    LOGFIRE_SPAN_TYPE_LOG,
    LOGFIRE_STREAM_DURATION,
    OPENLIT_STREAM,
    ScopeRule,
    rule_for_scope,
)
from driftline.streams.decode import (
    SERVER_ADDRESS,
    UNDECODABLE,
    ContentType,
    NotOtlpError,
    SpanIndex,
    any_value_to_python,
    decode_traces,
    without_credentials,
)

__all__ = [
    "SPAN_RECORD_FIELDS",
    "IngestPolicy",
    "NormalizedBatch",
    "Reject",
    "normalize_message",
    "printable",
    "safe_name",
]

SPAN_RECORD_FIELDS: Final = (
    "trace_id",
    "span_id",
    "parent_span_id",
    "name",
    "start_ts",
    "end_ts",
    "operation",
    "is_llm_call",
    "agent",
    "workflow",
    "service",
    "environment",
    "tenant",
    "route",
    "session_id",
    "status",
)

# Why a span that looks like an LLM call has no tokens (NormalizedBatch.tokenless), and the
# worker counters they are added to (NormalizedBatch.counters).
TOKENLESS_NO_USAGE: Final = "no_usage"
TOKENLESS_ZERO_USAGE: Final = "zero_usage"
TOKENLESS_NOT_A_CALL: Final = "not_a_call"
TOKENLESS_COUNTER_PREFIX: Final = "decode.tokenless."

# Identity values longer than this are rejected rather than truncated: a truncated model or
# workflow name would silently merge distinct series.
MAX_IDENTITY_CHARS: Final = 512

_STATUS_NAMES: Final = ("unset", "ok", "error")
_STATUS_ERROR: Final = 2
_TRACE_ID_BYTES: Final = 16
_SPAN_ID_BYTES: Final = 8
_ZERO_TRACE_ID: Final = bytes(_TRACE_ID_BYTES)
_ZERO_SPAN_ID: Final = bytes(_SPAN_ID_BYTES)
_MAX_EXACT_DOUBLE: Final = 2.0**53
_MAPPED_KEYS: Final = a.MAPPED_KEYS
_LLM_CALL_OPERATIONS: Final = a.LLM_CALL_OPERATIONS
_TOKEN_KEYS: Final = frozenset(a.INPUT_TOKENS_KEYS + a.OUTPUT_TOKENS_KEYS)
_MODEL_KEYS: Final = frozenset(a.MODEL_KEYS)
_OPERATION_KEYS: Final = frozenset(
    (a.GEN_AI_OPERATION_NAME, a.OPENINFERENCE_SPAN_KIND, a.TRACELOOP_SPAN_KIND)
)
_RESOURCE_FALLBACK_KEYS: Final = (
    a.DRIFTLINE_TENANT,
    a.DRIFTLINE_ROUTE,
    a.DRIFTLINE_MODEL_VERSION,
    a.DRIFTLINE_PROMPT_VERSION,
    a.DRIFTLINE_RETRIEVAL_INDEX_VERSION,
    a.DRIFTLINE_ROUTER_VERSION,
)
# One-key precedence lists, built once.
_MODEL_VERSION: Final = (a.DRIFTLINE_MODEL_VERSION,)
_PROMPT_VERSION: Final = (a.DRIFTLINE_PROMPT_VERSION,)
_INDEX_VERSION: Final = (a.DRIFTLINE_RETRIEVAL_INDEX_VERSION,)
_ROUTER_VERSION: Final = (a.DRIFTLINE_ROUTER_VERSION,)
_USER_HASH: Final = (a.DRIFTLINE_USER_HASH,)
_ERROR_TYPE: Final = (a.ERROR_TYPE,)
_RETRY_ATTEMPT: Final = (a.DRIFTLINE_RETRY_ATTEMPT,)
_TOOL_CALLS: Final = (a.DRIFTLINE_TOOL_CALLS,)
_FINISH_REASONS: Final = (a.GEN_AI_RESPONSE_FINISH_REASONS,)
_LLM_FINISH_REASON: Final = (a.LLM_FINISH_REASON,)
_TYPE_NAMES: Final[dict[type, str]] = {
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a double",
    bytes: "bytes",
    list: "an array",
    dict: "a key-value list",
}
_RESOURCE_KEYS: Final = frozenset((a.SERVICE_NAME, *a.ENVIRONMENT_KEYS, *_RESOURCE_FALLBACK_KEYS))
# "RateLimitError: slow down" -> "RateLimitError" (the OTel SDKs' status description form).
_EXCEPTION_CLASS: Final = re.compile(r"([A-Za-z_][\w.]*):")
# Characters that steer a terminal or break a CSV line: C0 controls, DEL, C1 controls (ESC
# sequences, OSC titles, bells); the bidirectional overrides, isolates and marks that
# reorder what is shown; the line and paragraph separators that end a line in JavaScript
# and some log viewers; and invisible ones that carry hidden text (the byte-order mark, the
# tag characters). Joiners stay: scripts such as Persian need them inside words.
_CONTROL_CHARS: Final = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
    "\ufeff\U000e0000-\U000e007f]"
)
_REPLACEMENT: Final = "\ufffd"


@dataclass(frozen=True, slots=True)
class IngestPolicy:
    """What the normalizer lets in (the ``[ingest]`` settings)."""

    # Spans dated outside [arrival - max_past_s, arrival + max_future_s] are rejected.
    max_past_s: float = 7 * 86_400.0
    max_future_s: float = 3_600.0
    # Free attribute keys kept (fnmatch patterns, case-sensitive).
    attributes_allow: tuple[str, ...] = a.DEFAULT_ATTRIBUTES_ALLOW
    store_content: bool = False  # keep every free attribute, prompts and completions too
    dlq_content: bool = False  # dead letters carry the whole span, or the whole message

    @classmethod
    def from_settings(cls, ingest: Any) -> IngestPolicy:
        """From ``Settings.ingest``; its ``attributes_allow = None`` means the built-in list."""
        allow = ingest.attributes_allow
        return cls(
            max_past_s=ingest.max_past_s,
            max_future_s=ingest.max_future_s,
            attributes_allow=a.DEFAULT_ATTRIBUTES_ALLOW if allow is None else tuple(allow),
            store_content=ingest.store_content,
            dlq_content=ingest.dlq_content,
        )


DEFAULT_POLICY: Final = IngestPolicy()


@dataclass(slots=True)
class Reject:
    reason: str  # short machine code, e.g. "missing_trace_id", "wrong_type:<key>"
    detail: str  # human sentence
    trace_id: str  # hex, "" if unknown
    span_id: str
    payload: bytes  # dead-letter bytes: the span with its resource and scope (see above)


@dataclass(slots=True)
class NormalizedBatch:
    events: list[dict[str, Any]]
    spans: list[dict[str, Any]]
    rejects: list[Reject]
    span_count: int
    # Spans that look like LLM calls but carry no token counts, by (reason, instrumentation
    # scope), counted here instead of passing in silence. Reasons:
    # - "no_usage": a call that succeeded without any token attribute (still an event: the
    #   call happened, it just costs nothing);
    # - "zero_usage": a call that succeeded with every token count 0 (an event, too);
    # - "not_a_call": a span naming a model, without an operation or any token attribute:
    #   not taken for a call (nothing says it is one), so not an event.
    tokenless: dict[tuple[str, str], int] = dataclass_field(default_factory=dict)
    # Spans rejected past :data:`MAX_SPAN_REJECTS` (or the dead-letter byte budget) in this
    # message, by reason: within the one ``too_many_rejects`` reject of the whole message.
    rejected_within_message: dict[str, int] = dataclass_field(default_factory=dict)

    def counters(self) -> dict[str, int]:
        """What this batch adds to the worker's counters: ``decode.tokenless.<reason>``,
        and ``rejects.<reason>`` for the spans of :attr:`rejected_within_message`.

        >>> NormalizedBatch([], [], [], 3, {("no_usage", "a"): 2, ("no_usage", "b"): 1}).counters()
        {'decode.tokenless.no_usage': 3}
        """
        out: dict[str, int] = {}
        for (reason, _), count in self.tokenless.items():
            name = TOKENLESS_COUNTER_PREFIX + reason
            out[name] = out.get(name, 0) + count
        for reason, count in self.rejected_within_message.items():
            out[REJECTS_COUNTER_PREFIX + reason] = count
        return out


class _SpanRejected(Exception):
    """Raised inside span normalization; becomes a :class:`Reject` for that span only."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def normalize_message(
    payload: bytes,
    *,
    content_type: Literal["otlp_proto", "otlp_json"] | None = None,
    max_attributes: int = MAX_EVENT_ATTRIBUTES,
    max_attribute_chars: int = MAX_ATTRIBUTE_VALUE_CHARS,
    policy: IngestPolicy = DEFAULT_POLICY,
    arrival_ns: int | None = None,
) -> NormalizedBatch:
    """Normalize one OTLP traces message (``TracesData`` or ``ExportTraceServiceRequest``,
    protobuf or OTLP/JSON; ``content_type=None`` sniffs). Never raises.

    ``arrival_ns``: when the message arrived (its Kafka timestamp); spans are checked against
    ``policy``'s window around it. ``None`` (recorded files) checks the fixed bounds only.

    >>> batch = normalize_message(b"not otlp")
    >>> [r.reason for r in batch.rejects], batch.events
    (['not_otlp'], [])
    """
    try:
        return _normalize(
            payload, content_type, max_attributes, max_attribute_chars, policy, arrival_ns
        )
    except NotOtlpError as exc:
        return _whole_message_reject(payload, "not_otlp", str(exc), policy)
    except Exception as exc:  # the contract is "never raises": keep the bytes, say why
        detail = f"{type(exc).__name__}: {exc}"
        return _whole_message_reject(payload, "internal_error", detail, policy)


def _whole_message_reject(
    payload: Any, reason: str, detail: str, policy: IngestPolicy
) -> NormalizedBatch:
    raw = bytes(payload) if isinstance(payload, bytes | bytearray | memoryview) else b""
    # Bytes that did not decode are all content as far as anyone can tell: the source
    # topic, partition and offset in the dead letter's headers lead back to them.
    return NormalizedBatch(
        [], [], [Reject(reason, detail, "", "", raw if policy.dlq_content else b"")], 0
    )


def _window(policy: IngestPolicy, arrival_ns: int | None) -> tuple[int, int]:
    """The earliest start and latest end a span may have, in ns since the epoch."""
    if arrival_ns is None:
        return EARLIEST_TIME_NS, LATEST_TIME_NS
    return (
        max(EARLIEST_TIME_NS, arrival_ns - int(policy.max_past_s * 1e9)),
        min(LATEST_TIME_NS, arrival_ns + int(policy.max_future_s * 1e9)),
    )


def _normalize(
    payload: bytes,
    content_type: ContentType | None,
    max_attributes: int,
    max_attribute_chars: int,
    policy: IngestPolicy,
    arrival_ns: int | None,
) -> NormalizedBatch:
    decoded = decode_traces(payload, content_type)
    events: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    rejects: list[Reject] = []
    span_count = 0
    span_errors = decoded.span_errors
    limits = _limits_for(max_attributes, max_attribute_chars, policy)
    window = _window(policy, arrival_ns)
    tokenless: dict[tuple[str, str], int] = {}
    unsent: dict[str, int] = {}
    dead_lettered, budget = 0, DEAD_LETTER_BYTES_PER_BYTE * len(payload) + DEAD_LETTER_BYTES_MIN
    for ri, resource_spans in enumerate(decoded.data.resource_spans):
        resource = _ResourceContext(resource_spans.resource.attributes)
        for si, scope_spans in enumerate(resource_spans.scope_spans):
            scope = _scope(scope_spans.scope) if scope_spans.HasField("scope") else _NO_SCOPE
            for pi, span in enumerate(scope_spans.spans):
                span_count += 1
                event_count = len(events)
                record_count = len(records)
                try:
                    if span_errors:
                        preset = span_errors.get((ri, si, pi))
                        if preset is not None:
                            raise _SpanRejected(*preset)
                    try:
                        not_a_call = _normalize_span_fast(
                            span, resource, events, records, limits, window
                        )
                    except Exception:
                        # The fast path checks fields in another order and may stop at a
                        # value the exact path never reads (a non-LLM span's provider, say):
                        # the exact path gives the contract's answer, reject or event.
                        del events[event_count:], records[record_count:]
                        not_a_call = _normalize_span(
                            span, resource, events, records, limits, window
                        )
                    if not_a_call:
                        key = (TOKENLESS_NOT_A_CALL, scope.name)
                        tokenless[key] = tokenless.get(key, 0) + 1
                    if len(events) == event_count and scope.call_from_name:
                        named = _as_named_call(span, scope, records, record_count)
                        if named is not None:
                            del records[record_count:]
                            _normalize_span(named, resource, events, records, limits, window)
                            span = named
                    if len(events) > event_count:
                        _finish_call(span, scope, events, records, tokenless)
                except Exception as exc:  # one odd span must not cost the rest of the message
                    del events[event_count:], records[record_count:]
                    why = (
                        exc
                        if isinstance(exc, _SpanRejected)
                        else _SpanRejected("internal_error", f"{type(exc).__name__}: {exc}")
                    )
                    if len(rejects) < MAX_SPAN_REJECTS and dead_lettered <= budget:
                        reject = _span_reject(decoded, (ri, si, pi), span, why, policy)
                        dead_lettered += len(reject.payload)
                        rejects.append(reject)
                    else:
                        unsent[why.reason] = unsent.get(why.reason, 0) + 1
    if unsent:
        rejects.append(_too_many_rejects(payload, unsent, policy))
    return NormalizedBatch(events, records, rejects, span_count, tokenless, unsent)


# Spans of one message dead-lettered one by one, and the bytes their dead letters may take
# (each carries its resource) per byte of the message; the rest go as the whole message,
# once. A 1 MB message of empty spans made 500,000 dead letters in 4.9 s, and one with a
# 500 KB resource 500 MB of them.
MAX_SPAN_REJECTS: Final = 1000
DEAD_LETTER_BYTES_PER_BYTE: Final = 2
DEAD_LETTER_BYTES_MIN: Final = 1 << 16
TOO_MANY_REJECTS: Final = "too_many_rejects"
REJECTS_COUNTER_PREFIX: Final = "rejects."


def _too_many_rejects(payload: bytes, unsent: dict[str, int], policy: IngestPolicy) -> Reject:
    counts = ", ".join(f"{reason} {n}" for reason, n in sorted(unsent.items()))
    detail = f"{sum(unsent.values())} more spans rejected than sent one by one ({counts})"
    return _whole_message_reject(payload, TOO_MANY_REJECTS, detail, policy).rejects[0]


# --- after the mapping: what needs the scope, span events or the whole event -------------------


@dataclass(frozen=True, slots=True)
class _Scope:
    name: str
    rule: ScopeRule | None
    # Provider of the calls whose failed spans carry no attributes: read from the span name.
    call_from_name: str = ""


_NO_SCOPE: Final = _Scope("", None)


@functools.lru_cache(maxsize=1024)
def _scope(encoded: bytes) -> _Scope:
    """The instrumentation scope's name and the rule for it, from its encoded bytes."""
    try:
        scope = InstrumentationScope.FromString(encoded)
    except Exception:  # an unreadable scope only costs the scope rules
        return _NO_SCOPE
    name = scope.name[:MAX_IDENTITY_CHARS]
    rule = rule_for_scope(name, scope.version)
    provider = rule.bare_failure_providers.get(name, "") if rule is not None else ""
    return _Scope(name, rule, provider)


def _as_named_call(span: Any, scope: _Scope, records: list[Any], record_count: int) -> Any:
    """A copy of a failed span without attributes, named ``"<operation> <model>"``, with
    the operation, provider and model it names; None if the span is anything else."""
    if (
        len(span.attributes)
        or span.status.code != _STATUS_ERROR
        or len(records) != record_count + 1  # not recorded: rejected or odd, leave it
    ):
        return None
    name = span.name if type(span.name) is str else ""
    operation, _, model = name.partition(" ")
    if operation not in _LLM_CALL_OPERATIONS or not model:
        return None
    named = type(span)()
    named.CopyFrom(span)
    for key, value in (
        (a.GEN_AI_OPERATION_NAME, operation),
        (a.GEN_AI_PROVIDER_NAME, scope.call_from_name),
        (a.GEN_AI_REQUEST_MODEL, model),
    ):
        named.attributes[key] = AnyValue(string_value=value).SerializeToString()
    return named


def _finish_call(
    span: Any,
    scope: _Scope,
    events: list[dict[str, Any]],
    records: list[dict[str, Any]],
    tokenless: dict[tuple[str, str], int],
) -> None:
    """Corrections to the LLM call just appended to ``events`` (its record is ``records[-1]``)
    that the per-key mapping cannot make: the scope's rule, the exception event, and the
    count of calls without tokens. Raises :class:`_SpanRejected` like the mapping does."""
    event = events[-1]
    rule = scope.rule
    if rule is not None and not _apply_rule(rule, span, event, records[-1]):
        del events[-1]
        return
    status = event["status"]
    if status == "error":
        if not event["error_type"]:
            event["error_type"] = _exception_event_class(span)
    elif not event["input_tokens"] and not event["output_tokens"]:
        reason = (
            TOKENLESS_NO_USAGE if _TOKEN_KEYS.isdisjoint(span.attributes) else TOKENLESS_ZERO_USAGE
        )
        key = (reason, scope.name)
        tokenless[key] = tokenless.get(key, 0) + 1


def _apply_rule(rule: ScopeRule, span: Any, event: dict[str, Any], record: dict[str, Any]) -> bool:
    """Applies ``rule`` to one call's event and record; False: the span is not a call."""
    attrs = span.attributes
    if rule.stream_as_log_record:
        if _attribute(attrs, LOGFIRE_SPAN_TYPE) == LOGFIRE_SPAN_TYPE_LOG:
            duration_ms = _seconds_as_ms(_values(attrs, (LOGFIRE_STREAM_DURATION,)), _DURATION)
            if duration_ms is not None:
                event["latency_ms"] = duration_ms
                event["start_ts"] = record["start_ts"] = event["end_ts"] - round(duration_ms * 1000)
        elif (
            event["status"] != "error"
            and _TOKEN_KEYS.isdisjoint(attrs)
            and a.GEN_AI_RESPONSE_ID not in attrs
        ):
            # The opening span of a stream: the log record that follows carries the call.
            record["is_llm_call"] = False
            return False
    if rule.inputs_exclude_cache_for and event["provider"] in rule.inputs_exclude_cache_for:
        uncached = _count(_values(attrs, a.INPUT_TOKENS_KEYS), a.INPUT_TOKENS_KEYS, "negative")
        event["input_tokens"] = uncached + event["cache_read_tokens"] + event["cache_write_tokens"]
    if rule.ttft_only_when_streamed and _attribute(attrs, OPENLIT_STREAM) is not True:
        event["ttft_ms"] = None
    if rule.usage_literal_key and rule.usage_literal_key in attrs:
        _add_literal_usage(_attribute(attrs, rule.usage_literal_key), event)
    if rule.model_prefixed_by_provider and event["provider"]:
        prefix = event["provider"] + "/"
        for model_field in ("request_model", "response_model"):
            if event[model_field].startswith(prefix):
                event[model_field] = event[model_field][len(prefix) :]
        event["bundle_id"] = _bundle_id(
            event["response_model"] or event["request_model"],
            event["model_version"],
            event["prompt_version"],
            event["retrieval_index_version"],
            event["router_version"],
        )
    return True


_DURATION: Final = (LOGFIRE_STREAM_DURATION,)
_MAX_USAGE_LITERAL_CHARS: Final = 4096
# (event field, path into the usage dict): the first path holding a count wins.
_LITERAL_USAGE_PATHS: Final = (
    ("cache_read_tokens", ("prompt_tokens_details", "cached_tokens")),
    ("cache_read_tokens", ("cache_read_input_tokens",)),
    ("cache_write_tokens", ("cache_creation_input_tokens",)),
    ("cache_write_tokens", ("prompt_tokens_details", "cache_creation_tokens")),
    ("reasoning_tokens", ("completion_tokens_details", "reasoning_tokens")),
)


def _add_literal_usage(text: Any, event: dict[str, Any]) -> None:
    """Fills cache and reasoning counts the span left at 0 from a usage dict written as a
    Python literal; anything unreadable adds nothing."""
    if type(text) is not str or len(text) > _MAX_USAGE_LITERAL_CHARS:
        return
    try:
        usage = ast.literal_eval(text)  # a literal only: nothing is evaluated
    except Exception:  # not a literal, too deep: no usage to add
        return
    if type(usage) is not dict:
        return
    found: dict[str, int] = {}
    for field_name, path in _LITERAL_USAGE_PATHS:
        value: Any = usage
        for step in path:
            value = value.get(step) if type(value) is dict else None
        if field_name not in found and type(value) is int and 0 <= value <= MAX_TOKENS:
            found[field_name] = value
    for field_name, count in found.items():
        if not event[field_name]:
            event[field_name] = count
    cached = event["cache_read_tokens"] + event["cache_write_tokens"]
    if cached > event["input_tokens"]:
        event["input_tokens"] += cached  # exclusive counts, as in _normalize_span


def _attribute(attrs: Any, key: str) -> Any:
    return any_value_to_python(attrs[key]) if key in attrs else None


def _values(attrs: Any, keys: tuple[str, ...]) -> dict[str, Any]:
    return {key: any_value_to_python(attrs[key]) for key in keys if key in attrs}


_SPAN_EVENTS_FIELD: Final = 11  # Span.events, which the lean schema leaves undecoded


def _exception_event_class(span: Any) -> str:
    """The class in the span's ``exception`` event (``exception.type``), without its module
    (``anthropic.InternalServerError`` -> ``InternalServerError``), as the status message
    and most instrumentations' ``error.type`` give it; ``""`` if there is none."""
    unknowns = unknown_fields.UnknownFieldSet(span)
    for index in range(len(unknowns)):
        unknown = unknowns[index]
        if unknown.field_number != _SPAN_EVENTS_FIELD or unknown.wire_type != _LENGTH_DELIMITED:
            continue
        try:
            event = FullSpan.Event.FromString(unknown.data)
        except Exception:  # an unreadable event only costs the error class
            continue
        if event.name != a.EXCEPTION_EVENT_NAME:
            continue
        for kv in event.attributes:
            if kv.key == a.EXCEPTION_TYPE and kv.value.HasField("string_value"):
                return _class_name(kv.value.string_value)
    return ""


_LENGTH_DELIMITED: Final = 2
# ASCII only: ``\w`` also takes digits such as "²", which no language's class name holds.
_CLASS_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _class_name(qualified: str) -> str:
    name = qualified.rsplit(".", 1)[-1]
    return name[:MAX_IDENTITY_CHARS] if _CLASS_NAME.fullmatch(name) else ""


def _span_reject(
    decoded: Any, index: SpanIndex, span: Any, exc: _SpanRejected, policy: IngestPolicy
) -> Reject:
    keep = None if policy.dlq_content else _dead_letter_keys(policy.attributes_allow)
    return Reject(
        exc.reason,
        exc.detail,
        bytes(span.trace_id).hex(),
        bytes(span.span_id).hex(),
        decoded.encode_span(index, keep),
    )


class _ResourceContext:
    """What every span of one resource shares, read once."""

    __slots__ = ("environment", "fallbacks", "memo_key", "originals", "service")

    def __init__(self, attrs: Any) -> None:
        values = _mapped_values(attrs, _RESOURCE_KEYS)
        originals: dict[str, str] = {}
        self.service = safe_name(_resource_text(values, (a.SERVICE_NAME,)), "service", originals)
        self.environment = safe_name(
            _resource_text(values, a.ENVIRONMENT_KEYS), "environment", originals
        )
        self.fallbacks = {key: _resource_text(values, (key,)) for key in _RESOURCE_FALLBACK_KEYS}
        self.originals = originals
        # Everything of the resource that reaches an event, as part of the identity memo key.
        self.memo_key = (self.service, self.environment, *self.fallbacks.values())


def _resource_text(values: dict[str, Any], keys: tuple[str, ...]) -> str:
    # Resource values shared by many spans are not grounds to reject each span: a value of
    # the wrong type or size is dropped instead.
    try:
        return _text(values, keys)
    except _SpanRejected:
        return ""


def _mapped_values(attrs: Any, wanted: frozenset[str]) -> dict[str, Any]:
    """Decoded values of the ``wanted`` keys present in a lean attribute map."""
    if not len(attrs):
        return {}
    return {key: any_value_to_python(attrs[key]) for key in wanted.intersection(attrs)}


def _normalize_span(
    span: Any,
    resource: _ResourceContext,
    events: list[dict[str, Any]],
    records: list[dict[str, Any]],
    limits: _Limits,
    window: tuple[int, int],
) -> bool:
    """Appends the span's record, and its event if it is an LLM call; True when the span
    looks like a call (it names a model) but is not taken for one (NormalizedBatch.tokenless).
    Raises :class:`_SpanRejected`."""
    trace_id, span_id, parent_span_id = _ids(span)
    start_ns = span.start_time_unix_nano
    end_ns = span.end_time_unix_nano
    if not start_ns or not end_ns or end_ns < start_ns:
        raise _SpanRejected(
            "bad_timestamps", f"span runs from {start_ns} ns to {end_ns} ns (need 0 < start <= end)"
        )
    _check_window(start_ns, end_ns, window)
    attrs = span.attributes
    # Listing keys is cheap; values are decoded only for keys that are used. Spans from one
    # instrumentation share a key set, so which keys are mapped and which go to the free
    # attributes map is worked out once per key set.
    mapped_keys, free_keys = _key_plan(tuple(attrs), limits.keep) if len(attrs) else _EMPTY_PLAN
    values = {}
    for key in mapped_keys:
        raw = attrs[key]
        value = _value_cache_get(raw, _MISS)
        values[key] = _decode_and_cache(raw) if value is _MISS else value
    name = span.name
    if type(name) is not str:  # proto2 strings with invalid UTF-8 arrive as bytes
        name = name.decode("utf-8", "replace")

    operation = _operation(values)
    is_llm_call = operation in _LLM_CALL_OPERATIONS
    vllm_request = False
    if not operation:
        if name == a.VLLM_REQUEST_SPAN_NAME:
            operation = a.OP_CHAT
            is_llm_call = vllm_request = True
        elif not (_TOKEN_KEYS.isdisjoint(values) or _MODEL_KEYS.isdisjoint(values)):
            is_llm_call = True

    status_code = span.status.code
    status = _STATUS_NAMES[status_code] if 0 <= status_code <= 2 else "unset"
    fallbacks = resource.fallbacks
    originals = dict(resource.originals)
    agent = safe_name(_text(values, (a.GEN_AI_AGENT_NAME,)), "agent", originals)
    workflow = safe_name(_text(values, a.WORKFLOW_KEYS), "workflow", originals)
    tenant = _text(values, (a.DRIFTLINE_TENANT,)) or fallbacks[a.DRIFTLINE_TENANT]
    tenant = safe_name(tenant, "tenant", originals)
    route = _text(values, (a.DRIFTLINE_ROUTE,)) or fallbacks[a.DRIFTLINE_ROUTE]
    route = safe_name(route, "route", originals)
    session_id = printable(_text(values, a.SESSION_KEYS))
    start_ts = start_ns // 1000
    end_ts = end_ns // 1000
    record = {
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_span_id": parent_span_id,
        "name": name,
        "start_ts": start_ts,
        "end_ts": end_ts,
        "operation": operation,
        "is_llm_call": is_llm_call,
        "agent": agent,
        "workflow": workflow,
        "service": resource.service,
        "environment": resource.environment,
        "tenant": tenant,
        "route": route,
        "session_id": session_id,
        "status": status,
    }
    if not is_llm_call:
        records.append(record)
        # Names a model, yet no operation and no token count says it is a call: counted.
        return not (
            _MODEL_KEYS.isdisjoint(values)
            or not _TOKEN_KEYS.isdisjoint(values)
            or not _OPERATION_KEYS.isdisjoint(values)
        )

    if end_ns - start_ns > _MAX_CALL_NS:
        raise _SpanRejected(
            "out_of_range:duration",
            f"the call lasted {(end_ns - start_ns) / 1e9:.0f} s; at most {MAX_CALL_SECONDS} s",
        )
    input_tokens = _count(values, a.INPUT_TOKENS_KEYS, "negative_tokens")
    output_tokens = _count(values, a.OUTPUT_TOKENS_KEYS, "negative_tokens")
    cache_read = _count(values, a.CACHE_READ_TOKENS_KEYS, "negative_tokens")
    cache_write = _count(values, a.CACHE_WRITE_TOKENS_KEYS, "negative_tokens")
    if cache_read + cache_write > input_tokens:
        # Cached tokens are part of input tokens (OTel GenAI semconv). A count smaller than
        # its cached part means the instrumentation reported them exclusive, as Anthropic's
        # API does; add them so input_tokens means the same thing for every provider.
        input_tokens += cache_read + cache_write
    provider = safe_name(_text(values, a.PROVIDER_KEYS).lower(), "provider", originals)
    if not provider and vllm_request:
        provider = a.VLLM_PROVIDER
    request_model = safe_name(_text(values, a.REQUEST_MODEL_KEYS), "request_model", originals)
    response_model = safe_name(_text(values, a.RESPONSE_MODEL_KEYS), "response_model", originals)
    model_version, prompt_version, index_version, router_version = _versions(values, fallbacks)
    error_type = printable(_text(values, _ERROR_TYPE))
    if not error_type and status == "error":
        error_type = _exception_class(span.status.message)
    events.append(
        {
            "trace_id": trace_id,
            "span_id": span_id,
            "parent_span_id": parent_span_id,
            "start_ts": start_ts,
            "end_ts": end_ts,
            "service": resource.service,
            "environment": resource.environment,
            "workflow": workflow,
            "agent": agent,
            "tenant": tenant,
            "user_hash": printable(_text(values, _USER_HASH)),
            "session_id": session_id,
            "route": route,
            "operation": operation,
            "provider": provider,
            "request_model": request_model,
            "response_model": response_model,
            "model_version": model_version,
            "prompt_version": prompt_version,
            "retrieval_index_version": index_version,
            "router_version": router_version,
            "bundle_id": _bundle_id(
                response_model or request_model,
                model_version,
                prompt_version,
                index_version,
                router_version,
            ),
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cache_read_tokens": cache_read,
            "cache_write_tokens": cache_write,
            "reasoning_tokens": _count(values, a.REASONING_TOKENS_KEYS, "negative_tokens"),
            "cost_usd": None,
            "price_source": "",
            "latency_ms": (end_ns - start_ns) / 1e6,
            "ttft_ms": _seconds_as_ms(values, a.TTFT_SECONDS_KEYS),
            "queue_ms": _seconds_as_ms(values, a.QUEUE_SECONDS_KEYS),
            "kv_cache_usage": _fraction(values, a.DRIFTLINE_KV_CACHE_USAGE),
            "retry_attempt": _count(values, _RETRY_ATTEMPT, "out_of_range", MAX_STEPS),
            "loop_depth": 0,
            "tool_calls": _count(values, _TOOL_CALLS, "out_of_range", MAX_STEPS),
            "finish_reason": _finish_reason(values),
            "output_chars": _optional_count(values, a.DRIFTLINE_OUTPUT_CHARS),
            "validation_failed": _flag(values, a.DRIFTLINE_OUTPUT_VALIDATION_FAILED),
            "error_type": error_type,
            "status": status,
            "attributes": _free_attributes(attrs, free_keys, limits, originals),
        }
    )
    records.append(record)
    return False


# --- ids -----------------------------------------------------------------------------------


def _ids(span: Any) -> tuple[str, str, str]:
    trace_id = span.trace_id
    span_id = span.span_id
    if not trace_id or trace_id == _ZERO_TRACE_ID:
        raise _SpanRejected("missing_trace_id", "span has no trace id (empty or all zero)")
    if not span_id or span_id == _ZERO_SPAN_ID:
        raise _SpanRejected("missing_span_id", "span has no span id (empty or all zero)")
    if len(trace_id) != _TRACE_ID_BYTES or len(span_id) != _SPAN_ID_BYTES:
        raise _SpanRejected(
            "bad_id_length",
            f"trace id has {len(trace_id)} bytes and span id {len(span_id)} "
            f"(need {_TRACE_ID_BYTES} and {_SPAN_ID_BYTES})",
        )
    parent = span.parent_span_id
    if not parent or parent == _ZERO_SPAN_ID:
        return trace_id.hex(), span_id.hex(), ""
    if len(parent) != _SPAN_ID_BYTES:
        raise _SpanRejected(
            "bad_id_length", f"parent span id has {len(parent)} bytes (need {_SPAN_ID_BYTES})"
        )
    return trace_id.hex(), span_id.hex(), parent.hex()


# --- typed readers over decoded values (first key with a value wins) --------------------------


def _operation(values: dict[str, Any]) -> str:
    if _OPERATION_KEYS.isdisjoint(values):
        return ""
    operation = _text(values, (a.GEN_AI_OPERATION_NAME,))
    if operation:
        return operation
    kind = _text(values, (a.OPENINFERENCE_SPAN_KIND,))
    if kind in a.OPENINFERENCE_KIND_TO_OPERATION:
        return a.OPENINFERENCE_KIND_TO_OPERATION[kind]
    return a.TRACELOOP_KIND_TO_OPERATION.get(_text(values, (a.TRACELOOP_SPAN_KIND,)), "")


def _text(values: dict[str, Any], keys: tuple[str, ...]) -> str:
    """An identity string; integers are accepted as text (``prompt.version = 3``)."""
    for key in keys:
        value = values.get(key)
        if value is None:
            continue
        kind = type(value)
        if kind is int:
            return str(value)
        if kind is not str:
            raise _wrong_type(key, value, "a string")
        if not value:
            continue
        if len(value) > MAX_IDENTITY_CHARS:
            raise _SpanRejected(
                f"oversize_value:{key}",
                f"{key} has {len(value)} characters; identity values are limited to "
                f"{MAX_IDENTITY_CHARS}",
            )
        return value
    return ""


def _versions(values: dict[str, Any], fallbacks: dict[str, str]) -> tuple[str, str, str, str]:
    """Model, prompt, retrieval index and router versions (the span's, else its resource's):
    free text that is grouped by and shown as stored, so control characters are replaced
    (names are made safe instead, which keeps them distinct)."""
    return (
        printable(_text(values, _MODEL_VERSION) or fallbacks[a.DRIFTLINE_MODEL_VERSION]),
        printable(_text(values, _PROMPT_VERSION) or fallbacks[a.DRIFTLINE_PROMPT_VERSION]),
        printable(_text(values, _INDEX_VERSION) or fallbacks[a.DRIFTLINE_RETRIEVAL_INDEX_VERSION]),
        printable(_text(values, _ROUTER_VERSION) or fallbacks[a.DRIFTLINE_ROUTER_VERSION]),
    )


def _count(
    values: dict[str, Any], keys: tuple[str, ...], negative_reason: str, most: int = MAX_TOKENS
) -> int:
    for key in keys:
        value = values.get(key)
        if value is None:
            continue
        number = _integer(key, value)
        if number < 0:
            raise _SpanRejected(f"{negative_reason}:{key}", f"{key} is negative ({number})")
        if number > most:
            raise _SpanRejected(f"out_of_range:{key}", f"{key} is {number}; at most {most}")
        return number
    return 0


def _optional_count(values: dict[str, Any], key: str) -> int | None:
    if values.get(key) is None:
        return None
    return _count(values, (key,), "out_of_range")


def _integer(key: str, value: Any) -> int:
    kind = type(value)
    if kind is int:
        return value
    if kind is float:
        # Integral doubles are counts too (some SDKs send every number as a double).
        if value.is_integer() and abs(value) <= _MAX_EXACT_DOUBLE:
            return int(value)
        raise _SpanRejected(f"wrong_type:{key}", f"{key} is {value!r}, not an integer")
    raise _wrong_type(key, value, "an integer")


def _real(key: str, value: Any) -> float:
    kind = type(value)
    if kind is not float and kind is not int:
        raise _wrong_type(key, value, "a number")
    if value != value:
        raise _SpanRejected(f"out_of_range:{key}", f"{key} is NaN")
    return float(value)


def _seconds_as_ms(values: dict[str, Any], keys: tuple[str, ...]) -> float | None:
    for key in keys:
        value = values.get(key)
        if value is None:
            continue
        seconds = _real(key, value)
        if not 0.0 <= seconds <= MAX_CALL_SECONDS:
            raise _SpanRejected(
                f"out_of_range:{key}", f"{key} is {seconds!r} seconds; at most {MAX_CALL_SECONDS}"
            )
        return seconds * 1000.0
    return None


def _fraction(values: dict[str, Any], key: str) -> float | None:
    value = values.get(key)
    if value is None:
        return None
    real = _real(key, value)
    if not 0.0 <= real <= 1.0:
        raise _SpanRejected(f"out_of_range:{key}", f"{key} is {real!r}, outside [0, 1]")
    return real


def _flag(values: dict[str, Any], key: str) -> bool:
    value = values.get(key)
    if value is None:
        return False
    if type(value) is bool:
        return value
    if type(value) is int and value in (0, 1):
        return value == 1
    raise _wrong_type(key, value, "a boolean")


def _finish_reason(values: dict[str, Any]) -> str:
    """The first finish reason reported, control characters replaced (see :func:`printable`)."""
    return printable(_first_finish_reason(values))


def _first_finish_reason(values: dict[str, Any]) -> str:
    reasons = values.get(a.GEN_AI_RESPONSE_FINISH_REASONS)
    if type(reasons) is str and reasons.startswith("["):
        # The array sent as JSON text ('["stop"]', logfire): a string array all the same.
        reasons = _json_string_list(reasons)
        values = {**values, a.GEN_AI_RESPONSE_FINISH_REASONS: reasons}
    if type(reasons) is list:
        # A string array; an empty one means "not reported", so the next key may answer.
        first = {a.GEN_AI_RESPONSE_FINISH_REASONS: reasons[0]} if reasons else {}
        return _text(first, _FINISH_REASONS) or _text(values, _LLM_FINISH_REASON)
    # Some instrumentations send one string instead of an array.
    return _text(values, a.FINISH_REASON_KEYS)


def printable(text: str) -> str:
    """``text`` with each control character (C0, DEL, C1, bidirectional override) replaced
    by U+FFFD: free text copied from a span into a field that terminals, CSV files and
    dashboards show as is. Its length is bounded by the reader (``MAX_IDENTITY_CHARS``).

    >>> printable("tool_calls"), printable("openai.APIError")
    ('tool_calls', 'openai.APIError')
    >>> printable("\\x1b]0;pwned\\x07\\x1b[2J\\x1b[31mRED")
    '\ufffd]0;pwned\ufffd\ufffd[2J\ufffd[31mRED'
    """
    if text.isprintable() or _CONTROL_CHARS.search(text) is None:
        return text
    return _CONTROL_CHARS.sub(_REPLACEMENT, text)


def _json_string_list(text: str) -> list[str] | str:
    """``text`` parsed when it is a JSON array of strings; otherwise ``text`` itself."""
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):  # "[[[[...": nested past the parser's depth
        return text
    if type(parsed) is list and all(type(item) is str for item in parsed):
        return parsed
    return text


def _wrong_type(key: str, value: Any, wanted: str) -> _SpanRejected:
    return _SpanRejected(
        f"wrong_type:{key}",
        f"{key} holds {_TYPE_NAMES.get(type(value), 'an undecodable value')}, expected {wanted}",
    )


def _exception_class(message: Any) -> str:
    if type(message) is not str:
        message = message.decode("utf-8", "replace")
    match = _EXCEPTION_CLASS.match(message)
    return match.group(1)[:MAX_IDENTITY_CHARS] if match else ""


# --- the bounded free-form map ----------------------------------------------------------------


def _free_attributes(
    attrs: Any, free_keys: tuple[str, ...], limits: _Limits, originals: dict[str, str]
) -> dict[str, str]:
    out = {}
    max_chars = limits.max_chars
    for key in free_keys[: limits.max_attributes]:
        raw = attrs[key]
        text = _display_cache_get(raw)
        if text is None:
            text = _display_and_cache(raw)
        if key == SERVER_ADDRESS:  # the whole value: a cut may fall inside a password
            text = without_credentials(text)
        out[_shown_key(key, max_chars)] = text if len(text) <= max_chars else text[:max_chars]
    if originals:
        out.update(_shown_originals(originals, max_chars))
    return out


def _shown_key(key: str, max_chars: int) -> str:
    """An attribute key as the event shows it: printable, at most ``max_chars``."""
    return printable(key if len(key) <= max_chars else key[:max_chars])


def _shown_originals(originals: dict[str, str], max_chars: int) -> dict[str, str]:
    return {key: value[:max_chars] for key, value in originals.items()}


def _key_plan(keys: tuple[Any, ...], keep: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(mapped keys present, keys for the free attributes map in alphabetical order)."""
    plan = _plans.get((keys, keep))
    if plan is None:
        mapped = tuple(_MAPPED_KEYS.intersection(keys))
        free = sorted(
            key
            for key in keys
            # keys off the allow list are dropped, and so are keys that are not valid
            # UTF-8 (they arrive as bytes and cannot be looked up again) and the originals
            # of names made safe, which only the normalizer writes (a span sending its own
            # would point lookups by original name at another workflow)
            if type(key) is str
            and key not in _MAPPED_KEYS
            and not key.startswith(a.ORIGINAL_NAME_PREFIX)
            and keep(key)
        )
        plan = (mapped, tuple(free))
        if len(_plans) >= _PLAN_LIMIT:
            _plans.clear()
        _plans[(keys, keep)] = plan
    return plan


@functools.cache
def _allow_list(patterns: tuple[str, ...]) -> Any:
    """``key -> bool``: does the key match one of ``patterns``? One regex for them all."""
    if not patterns:
        return lambda key: False
    matcher = re.compile("|".join(fnmatch.translate(p) for p in patterns)).match
    return lambda key: matcher(key) is not None


def _keep_everything(key: str) -> bool:
    return True


def _key_filter(policy: IngestPolicy) -> Any:
    return _keep_everything if policy.store_content else _allow_list(policy.attributes_allow)


@functools.cache
def _dead_letter_keys(patterns: tuple[str, ...]) -> Any:
    """The attribute keys a dead letter keeps: mapped ones and allowed free ones."""
    allowed = _allow_list(patterns)
    return lambda key: key in _MAPPED_KEYS or key in _RESOURCE_KEYS or allowed(key)


# --- bounds ------------------------------------------------------------------------------------

_MAX_CALL_NS: Final = MAX_CALL_SECONDS * 10**9


def safe_name(name: str, field: str, originals: dict[str, str]) -> str:
    """``name`` if every character is safe, else a safe form that stays distinct; the
    original goes to ``originals`` under ``driftline.original.<field>``.

    >>> found = {}
    >>> safe_name("support-chat", "workflow", found), found
    ('support-chat', {})
    >>> quote_and_backslash = "zz'" + chr(92) + ") OR 1=1 --"
    >>> safe_name(quote_and_backslash, "workflow", found)
    'zz___ OR 1_1 --~07418b00'
    >>> found == {"driftline.original.workflow": quote_and_backslash}
    True
    >>> _ = safe_name("wf\x1b[2J\u202e", "workflow", found)
    >>> found["driftline.original.workflow"]
    'wf\ufffd[2J\ufffd'
    """
    if not name or UNSAFE_NAME_CHAR.search(name) is None:
        return name
    # The original is kept for lookups, as free text: no control character reaches a
    # terminal, a CSV file or a dashboard through it.
    originals[a.ORIGINAL_NAME_PREFIX + field] = printable(name)
    digest = hashlib.blake2b(name.encode("utf-8", "replace"), digest_size=4).hexdigest()
    return f"{UNSAFE_NAME_CHAR.sub('_', name)}~{digest}"


def _check_window(start_ns: int, end_ns: int, window: tuple[int, int]) -> None:
    earliest, latest = window
    if start_ns < earliest:
        raise _SpanRejected(
            "stale_timestamp",
            f"span starts at {start_ns} ns, before {earliest} ns (the arrival time minus "
            "ingest.max_past_s, and never before 2000)",
        )
    if end_ns > latest:
        raise _SpanRejected(
            "future_timestamp",
            f"span ends at {end_ns} ns, after {latest} ns (the arrival time plus "
            "ingest.max_future_s, and never after 2089)",
        )


# --- caches ------------------------------------------------------------------------------------
# Attribute values repeat across spans (models, workflows, tenants, URLs): decoding each
# distinct encoded value once removes most of the per-value work. Key sets repeat per
# instrumentation. The caches hold immutable results (decoded lists and dicts are only
# read, never handed out), are bounded, and reset when full.
_CACHE_LIMIT: Final = 1 << 16
_CACHEABLE_BYTES: Final = 1024
_MISS: Final = object()
_value_cache: dict[bytes, Any] = {}
_display_cache: dict[bytes, str] = {}
_PLAN_LIMIT: Final = 4096
_EMPTY_PLAN: Final[tuple[tuple[str, ...], tuple[str, ...]]] = ((), ())
_plans: dict[tuple[Any, ...], tuple[tuple[str, ...], tuple[str, ...]]] = {}
_value_cache_get = _value_cache.get
_display_cache_get = _display_cache.get
_bundle_id: Final = functools.lru_cache(maxsize=4096)(bundle_id)


def _decode_and_cache(raw: bytes) -> Any:
    value = any_value_to_python(raw)
    if len(raw) <= _CACHEABLE_BYTES:
        if len(_value_cache) >= _CACHE_LIMIT:
            _value_cache.clear()
        _value_cache[raw] = value
    return value


def _display_and_cache(raw: bytes) -> str:
    text = printable(_display(any_value_to_python(raw)))
    if len(raw) <= _CACHEABLE_BYTES:
        if len(_display_cache) >= _CACHE_LIMIT:
            _display_cache.clear()
        _display_cache[raw] = text
    return text


def _display(value: Any) -> str:
    kind = type(value)
    if kind is str:
        return value
    if kind is int:
        return str(value)
    if kind is float:
        return repr(value)
    if kind is bool:
        return "true" if value else "false"
    if value is None or value is UNDECODABLE:
        return ""
    if kind is bytes:
        return base64.b64encode(value).decode("ascii")
    return json.dumps(value, ensure_ascii=False, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return None  # an undecodable value inside an array or key-value list


# --- the fast path ------------------------------------------------------------------------------
# Spans of one instrumentation share a key set, and most attribute values repeat (models,
# workflows, tenants, versions, finish reasons). So, per span, the fast path:
#   - looks up a plan for the span's key set: which keys feed which fields, and which go to
#     the free attributes map (in order, with their truncated names);
#   - looks up everything derived from the low-cardinality values (identity, model, bundle,
#     retry/tool/validation fields) in a memo keyed by the encoded bytes of those values,
#     the resource and the plan; a miss computes them with the exact readers;
#   - reads only the per-request values (tokens, timings, session, user) one by one.
# It produces exactly what _normalize_span produces; on any error it hands the span to
# _normalize_span, which decides the reject reason in the contract's order.

# Values that differ from request to request: read per span, never memoized.
_PER_SPAN_KEYS: Final = frozenset(
    (
        *a.SESSION_KEYS,
        a.DRIFTLINE_USER_HASH,
        *a.INPUT_TOKENS_KEYS,
        *a.OUTPUT_TOKENS_KEYS,
        *a.CACHE_READ_TOKENS_KEYS,
        *a.CACHE_WRITE_TOKENS_KEYS,
        *a.REASONING_TOKENS_KEYS,
        *a.TTFT_SECONDS_KEYS,
        *a.QUEUE_SECONDS_KEYS,
        a.DRIFTLINE_KV_CACHE_USAGE,
        a.DRIFTLINE_OUTPUT_CHARS,
    )
)
# Everything else that is mapped: few distinct values, memoized together.
_MEMO_KEYS: Final = _MAPPED_KEYS - _PER_SPAN_KEYS
_CACHE_TOKEN_KEYS: Final = frozenset(a.CACHE_READ_TOKENS_KEYS + a.CACHE_WRITE_TOKENS_KEYS)


# Per-span values are converted by the exact readers, on one value at a time. The fast path
# remembers, per kind, each encoded value that won a field and what it became: token counts,
# session ids and the like repeat too, so most fields cost one lookup.
def _as_count(key: str, value: Any) -> int:
    return _count({key: value}, (key,), "negative")  # the exact path words any reject


def _as_text(key: str, value: Any) -> str:  # user hashes and session ids: free text
    return printable(_text({key: value}, (key,)))


def _as_millis(key: str, value: Any) -> float | None:
    return _seconds_as_ms({key: value}, (key,))


def _as_fraction(key: str, value: Any) -> float | None:
    return _fraction({key: value}, key)


_known_counts: dict[bytes, int] = {}
_known_texts: dict[bytes, str] = {}
_known_millis: dict[bytes, float | None] = {}
_known_fractions: dict[bytes, float | None] = {}

# (event field, precedence list, converter, remembered results, value when no key is present)
# for the per-span fields of an LLM call.
_PER_SPAN_FIELDS: Final[tuple[tuple[str, tuple[str, ...], Any, dict[bytes, Any], Any], ...]] = (
    ("user_hash", _USER_HASH, _as_text, _known_texts, ""),
    ("input_tokens", a.INPUT_TOKENS_KEYS, _as_count, _known_counts, 0),
    ("output_tokens", a.OUTPUT_TOKENS_KEYS, _as_count, _known_counts, 0),
    ("cache_read_tokens", a.CACHE_READ_TOKENS_KEYS, _as_count, _known_counts, 0),
    ("cache_write_tokens", a.CACHE_WRITE_TOKENS_KEYS, _as_count, _known_counts, 0),
    ("reasoning_tokens", a.REASONING_TOKENS_KEYS, _as_count, _known_counts, 0),
    ("ttft_ms", a.TTFT_SECONDS_KEYS, _as_millis, _known_millis, None),
    ("queue_ms", a.QUEUE_SECONDS_KEYS, _as_millis, _known_millis, None),
    ("kv_cache_usage", (a.DRIFTLINE_KV_CACHE_USAGE,), _as_fraction, _known_fractions, None),
    ("output_chars", (a.DRIFTLINE_OUTPUT_CHARS,), _as_count, _known_counts, None),
)


def _read(
    attrs: Any, present: tuple[str, ...], known: dict[bytes, Any], convert: Any, default: Any
) -> Any:
    """The first present key with a value (a non-empty one, for text), converted."""
    for key in present:
        raw = attrs[key]
        result = known.get(raw)
        if result is not None:
            return result
        value = _value_cache_get(raw, _MISS)
        if value is _MISS:
            value = _decode_and_cache(raw)
        if value is None:
            continue
        result = convert(key, value)
        if result == "":
            continue
        if len(raw) <= _CACHEABLE_BYTES:
            if len(known) >= _CACHE_LIMIT:
                known.clear()
            known[raw] = result
        return result
    return default


class _Plan:
    """What a span with a given attribute key set reads, worked out once per key set."""

    __slots__ = (
        "adds_cached_tokens",
        "free_keys",
        "free_names",
        "free_values",
        "has_address",
        "memo_keys",
        "memo_values",
        "model_only",
        "readers",
        "session_keys",
        "tokens_and_model",
    )

    def __init__(
        self, keys: tuple[Any, ...], max_attributes: int, max_chars: int, keep: Any
    ) -> None:
        present = _MAPPED_KEYS.intersection(keys)
        self.memo_keys = tuple(sorted(_MEMO_KEYS.intersection(present)))
        self.session_keys = tuple(key for key in a.SESSION_KEYS if key in present)
        self.readers = tuple(
            (field, found[0], known, found, convert, default)
            for field, precedence, convert, known, default in _PER_SPAN_FIELDS
            if (found := tuple(key for key in precedence if key in present))
        )
        self.adds_cached_tokens = not _CACHE_TOKEN_KEYS.isdisjoint(present)
        self.tokens_and_model = not (
            _TOKEN_KEYS.isdisjoint(present) or _MODEL_KEYS.isdisjoint(present)
        )
        # A model without an operation or token counts: looks like a call, is not one.
        self.model_only = not (
            _MODEL_KEYS.isdisjoint(present)
            or not _TOKEN_KEYS.isdisjoint(present)
            or not _OPERATION_KEYS.isdisjoint(present)
        )
        kept = _key_plan(keys, keep)[1][:max_attributes]
        self.free_keys = kept
        self.free_names = tuple(_shown_key(key, max_chars) for key in kept)
        self.has_address = SERVER_ADDRESS in self.free_names
        self.memo_values = _values_getter(self.memo_keys)
        self.free_values = _values_getter(kept)


def _values_getter(keys: tuple[str, ...]) -> Any:
    """A function giving the encoded values of ``keys`` (all present) as a tuple.

    ``operator.itemgetter`` calls the map's lookup slot directly: about half the cost of
    ``map(attrs.__getitem__, keys)`` on protobuf maps.
    """
    if len(keys) > 1:
        return operator.itemgetter(*keys)
    if keys:
        key = keys[0]
        return lambda attrs: (attrs[key],)
    return lambda attrs: ()


class _Limits:
    """Plans and displayed attribute texts for one (max_attributes, max_chars, policy)."""

    __slots__ = ("hosts", "keep", "max_attributes", "max_chars", "plans", "texts")

    def __init__(self, max_attributes: int, max_chars: int, policy: IngestPolicy) -> None:
        self.max_attributes = max_attributes
        self.max_chars = max_chars
        self.keep = _key_filter(policy)  # which free attribute keys are kept
        self.plans: dict[tuple[Any, ...], _Plan] = {}
        self.texts: dict[bytes, str] = {}  # encoded AnyValue -> its truncated display text
        self.hosts: dict[bytes, str] = {}  # encoded server.address -> its host, as stored

    def plan(self, keys: tuple[Any, ...]) -> _Plan:
        plan = _Plan(keys, self.max_attributes, self.max_chars, self.keep)
        if len(self.plans) >= _PLAN_LIMIT:
            self.plans.clear()
        self.plans[keys] = plan
        return plan

    def address(self, raw: bytes) -> str:
        """``server.address`` as stored: its host, found in the whole value before the cut
        (a cut inside a long password would leave no ``@`` to find)."""
        host = self.hosts.get(raw)
        if host is None:
            host = without_credentials(printable(_display(any_value_to_python(raw))))
            host = _remembered(self.hosts, raw, host[: self.max_chars])
        return host

    def text(self, raw: bytes) -> str:
        text = printable(_display(any_value_to_python(raw)))
        return _remembered(self.texts, raw, text[: self.max_chars])


def _remembered(cache: dict[bytes, str], raw: bytes, text: str) -> str:
    """``text``, kept in ``cache`` under ``raw`` when ``raw`` is small (bounded: cleared
    when full)."""
    if len(raw) <= _CACHEABLE_BYTES:
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[raw] = text
    return text


_limits: dict[tuple[int, int, IngestPolicy], _Limits] = {}


def _limits_for(max_attributes: int, max_chars: int, policy: IngestPolicy) -> _Limits:
    key = (max_attributes, max_chars, policy)
    limits = _limits.get(key)
    if limits is None:
        if len(_limits) >= 16:  # callers use one or two settings; stay bounded anyway
            _limits.clear()
        limits = _limits[key] = _Limits(max_attributes, max_chars, policy)
    return limits


def _normalize_span_fast(
    span: Any,
    resource: _ResourceContext,
    events: list[dict[str, Any]],
    records: list[dict[str, Any]],
    limits: _Limits,
    window: tuple[int, int],
) -> bool:
    trace_id = span.trace_id
    span_id = span.span_id
    parent = span.parent_span_id
    start_ns = span.start_time_unix_nano
    end_ns = span.end_time_unix_nano
    # Any doubt about ids or times: the exact path words the reject.
    if (
        len(trace_id) != _TRACE_ID_BYTES
        or len(span_id) != _SPAN_ID_BYTES
        or trace_id == _ZERO_TRACE_ID
        or span_id == _ZERO_SPAN_ID
        or (parent and len(parent) != _SPAN_ID_BYTES)
        or start_ns < window[0]
        or end_ns > window[1]
        or end_ns < start_ns
    ):
        raise _SpanRejected("exact_path_decides", "")
    parent_span_id = parent.hex() if parent and parent != _ZERO_SPAN_ID else ""
    trace_id = trace_id.hex()
    span_id = span_id.hex()
    attrs = span.attributes
    keys = tuple(attrs)
    plan = limits.plans.get(keys)
    if plan is None:
        plan = limits.plan(keys)
    name = span.name
    if type(name) is not str:  # proto2 strings with invalid UTF-8 arrive as bytes
        name = name.decode("utf-8", "replace")

    memo_key = (
        plan,
        name == a.VLLM_REQUEST_SPAN_NAME,
        resource.memo_key,
        plan.memo_values(attrs),
    )
    memo = _memo_get(memo_key)
    if memo is None:
        memo = _remember(memo_key, resource)
    operation, is_llm_call, agent, workflow, tenant, route, template, originals = memo

    session_keys = plan.session_keys
    session_id = (
        (
            _known_texts.get(attrs[session_keys[0]])
            or _read(attrs, session_keys, _known_texts, _as_text, "")
        )
        if session_keys
        else ""
    )
    status_code = span.status.code
    status = _STATUS_NAMES[status_code] if 0 <= status_code <= 2 else "unset"
    start_ts = start_ns // 1000
    end_ts = end_ns // 1000
    record = {
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_span_id": parent_span_id,
        "name": name,
        "start_ts": start_ts,
        "end_ts": end_ts,
        "operation": operation,
        "is_llm_call": is_llm_call,
        "agent": agent,
        "workflow": workflow,
        "service": resource.service,
        "environment": resource.environment,
        "tenant": tenant,
        "route": route,
        "session_id": session_id,
        "status": status,
    }
    if not is_llm_call:
        records.append(record)
        return plan.model_only

    if end_ns - start_ns > _MAX_CALL_NS:
        raise _SpanRejected("exact_path_decides", "")
    event = dict(template)
    event["trace_id"] = trace_id
    event["span_id"] = span_id
    event["parent_span_id"] = parent_span_id
    event["start_ts"] = start_ts
    event["end_ts"] = end_ts
    event["session_id"] = session_id
    for field, first, known, present, convert, default in plan.readers:
        result = known.get(attrs[first])
        event[field] = (
            result if result is not None else _read(attrs, present, known, convert, default)
        )
    if plan.adds_cached_tokens:
        cached = event["cache_read_tokens"] + event["cache_write_tokens"]
        if cached > event["input_tokens"]:
            event["input_tokens"] += cached  # see _normalize_span
    event["latency_ms"] = (end_ns - start_ns) / 1e6
    event["status"] = status
    if status == "error" and not event["error_type"]:
        event["error_type"] = _exception_class(span.status.message)
    free_keys = plan.free_keys
    if free_keys:
        shown = list(map(limits.texts.get, plan.free_values(attrs)))
        if None in shown:
            shown = [
                text if text is not None else limits.text(attrs[key])
                for key, text in zip(free_keys, shown, strict=True)
            ]
        kept = event["attributes"] = dict(zip(plan.free_names, shown, strict=False))
        if plan.has_address:
            kept[SERVER_ADDRESS] = limits.address(attrs[SERVER_ADDRESS])
    else:
        event["attributes"] = {}
    if originals:
        event["attributes"].update(_shown_originals(originals, limits.max_chars))
    events.append(event)
    records.append(record)
    return False


_Memo = tuple[str, bool, str, str, str, str, dict[str, Any], dict[str, str]]
_MEMO_LIMIT: Final = 1 << 14
_memo: dict[Any, _Memo] = {}
_memo_get = _memo.get


def _remember(memo_key: tuple[Any, ...], resource: _ResourceContext) -> _Memo:
    """Everything derived from a span's low-cardinality values, by the exact readers."""
    plan, vllm_name, _, raws = memo_key
    values = {key: _decode_and_cache(raw) for key, raw in zip(plan.memo_keys, raws, strict=True)}
    operation = _operation(values)
    is_llm_call = operation in _LLM_CALL_OPERATIONS
    vllm_request = False
    if not operation:
        if vllm_name:
            operation = a.OP_CHAT
            is_llm_call = vllm_request = True
        elif plan.tokens_and_model:
            is_llm_call = True
    fallbacks = resource.fallbacks
    originals = dict(resource.originals)
    agent = safe_name(_text(values, (a.GEN_AI_AGENT_NAME,)), "agent", originals)
    workflow = safe_name(_text(values, a.WORKFLOW_KEYS), "workflow", originals)
    tenant = _text(values, (a.DRIFTLINE_TENANT,)) or fallbacks[a.DRIFTLINE_TENANT]
    tenant = safe_name(tenant, "tenant", originals)
    route = _text(values, (a.DRIFTLINE_ROUTE,)) or fallbacks[a.DRIFTLINE_ROUTE]
    route = safe_name(route, "route", originals)
    template: dict[str, Any] = {}  # only LLM calls become events
    if is_llm_call:
        provider = safe_name(_text(values, a.PROVIDER_KEYS).lower(), "provider", originals)
        if not provider and vllm_request:
            provider = a.VLLM_PROVIDER
        request_model = safe_name(_text(values, a.REQUEST_MODEL_KEYS), "request_model", originals)
        response_model = safe_name(
            _text(values, a.RESPONSE_MODEL_KEYS), "response_model", originals
        )
        model_version, prompt_version, index_version, router_version = _versions(values, fallbacks)
        # Field order is the event's: per-span fields are overwritten in place.
        template = {
            "trace_id": "",
            "span_id": "",
            "parent_span_id": "",
            "start_ts": 0,
            "end_ts": 0,
            "service": resource.service,
            "environment": resource.environment,
            "workflow": workflow,
            "agent": agent,
            "tenant": tenant,
            "user_hash": "",
            "session_id": "",
            "route": route,
            "operation": operation,
            "provider": provider,
            "request_model": request_model,
            "response_model": response_model,
            "model_version": model_version,
            "prompt_version": prompt_version,
            "retrieval_index_version": index_version,
            "router_version": router_version,
            "bundle_id": _bundle_id(
                response_model or request_model,
                model_version,
                prompt_version,
                index_version,
                router_version,
            ),
            "input_tokens": 0,
            "output_tokens": 0,
            "cache_read_tokens": 0,
            "cache_write_tokens": 0,
            "reasoning_tokens": 0,
            "cost_usd": None,
            "price_source": "",
            "latency_ms": 0.0,
            "ttft_ms": None,
            "queue_ms": None,
            "kv_cache_usage": None,
            "retry_attempt": _count(values, _RETRY_ATTEMPT, "out_of_range", MAX_STEPS),
            "loop_depth": 0,
            "tool_calls": _count(values, _TOOL_CALLS, "out_of_range", MAX_STEPS),
            "finish_reason": _finish_reason(values),
            "output_chars": None,
            "validation_failed": _flag(values, a.DRIFTLINE_OUTPUT_VALIDATION_FAILED),
            "error_type": printable(_text(values, _ERROR_TYPE)),
            "status": "",
            "attributes": None,
        }
    memo: _Memo = (operation, is_llm_call, agent, workflow, tenant, route, template, originals)
    if sum(map(len, raws)) <= _CACHEABLE_BYTES * 4:  # huge values are not worth keeping
        if len(_memo) >= _MEMO_LIMIT:
            _memo.clear()
        _memo[memo_key] = memo
    return memo
