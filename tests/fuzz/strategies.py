"""Hypothesis strategies for structurally valid but hostile outside input.

An OTLP traces message built here always encodes (protobuf and OTLP/JSON), yet everything
an application controls is hostile: attribute keys and values of every ``AnyValue`` type
(nested arrays and key-value lists), numbers that are huge, negative, NaN or infinite,
unicode and control characters in names, timestamps anywhere in uint64, missing and
duplicate ids, deep parent chains. Each LLM-call span starts from one instrumentation's
real attributes (``tests/utils/otlp_factory.py``), so many spans do become events and the
checks after the normalizer have something to check.

Content attributes (prompts, completions, documents, tool arguments) carry
:data:`CONTENT_MARKER`, which must never reach an event, a span record or a dead letter.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st
from opentelemetry.proto.trace.v1.trace_pb2 import Span, TracesData

from driftline.schemas import attributes as a
from tests.utils import otlp_factory as f

# Arrival time of every generated message; span times cluster around it.
ARRIVAL_NS = f.BASE_TIME_NS + 30 * 86_400 * 10**9
UINT64_MAX = 2**64 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
CONTENT_MARKER = "zq-content-marker-qz"

# Keys that hold prompts, answers, documents or tool arguments (the list, mixed case
# included): never on the allow list, so never kept by default.
CONTENT_KEYS = (
    "input.value",
    "Input.Value",
    "output.value",
    "gen_ai.prompt.0.content",
    "gen_ai.completion.0.content",
    "llm.input_messages.0.message.content",
    "llm.output_messages.0.message.content",
    "llm.prompt_template.variables",
    "llm.completions.0.content",
    "retrieval.documents.0.document.content",
    "embedding.embeddings.0.text",
    "langfuse.observation.input",
    "langfuse.observation.output",
    "message.content",
    "tool.parameters",
    "ai.prompt.messages",
    "gen_ai.tool.definitions",
    "mlflow.spanInputs",
)

_FAMILIES: tuple[Callable[[], dict[str, f.AttrValue]], ...] = (
    f.semconv_chat_attributes,
    f.deprecated_semconv_attributes,
    f.openinference_llm_attributes,
    f.openllmetry_attributes,
    f.langfuse_attributes,
    f.vllm_request_attributes,
)
_DRIFTLINE_KEYS = tuple(f.driftline_attributes())
# Every key an instrumentation family reads, plus the driftline ones: values for these are
# where the normalizer's type checks and bounds live.
MEANINGFUL_KEYS = tuple(
    sorted(
        {k for family in _FAMILIES for k in family()}
        | set(_DRIFTLINE_KEYS)
        | set(a.TTFT_SECONDS_KEYS)
        | set(a.WORKFLOW_KEYS)
    )
)

# Text with control characters, quotes, backslashes, `$`, any script, and long runs.
hostile_text = st.one_of(
    st.text(max_size=12),
    st.integers(257, 5000).map(lambda n: "x" * n),  # past every length bound
    st.text(st.characters(codec="utf-8"), max_size=40),
    st.sampled_from(
        [
            "",
            " ",
            "zz\\' ) OR 1=1 --",
            "a\\",
            "${__all}",
            "\x00\x01\x7f",
            "\u202eevil",
            "名前",
            "nan",
            "1e400",
            "-1",
            "18446744073709551616",
        ]
    ),
)
hostile_int = st.one_of(
    st.integers(INT64_MIN, INT64_MAX),
    st.integers(-5, 5),
    st.sampled_from([INT64_MAX, INT64_MIN, 2**53 + 1, 100_000_001, 1_000_001]),
)
hostile_float = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0, 5e-324, 86_401.0, 1.0001]),
)


def _any_value(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Attribute values of every AnyValue type, arrays and key-value lists nested."""
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(hostile_text, inner, max_size=4),
        ),
        max_leaves=12,
    )


any_value = _any_value(
    st.one_of(hostile_text, hostile_int, hostile_float, st.booleans(), st.binary(max_size=16))
)
# Random keys: any text, or a near miss of a real key (case, prefix, suffix).
attribute_key = st.one_of(
    hostile_text,
    st.sampled_from(MEANINGFUL_KEYS),
    st.sampled_from(MEANINGFUL_KEYS).map(str.upper),
    st.sampled_from(MEANINGFUL_KEYS).map(lambda k: k + ".0"),
)


def mostly(usual: st.SearchStrategy[Any], odd: st.SearchStrategy[Any], one_in: int) -> Any:
    """``odd`` about once in ``one_in`` draws, else ``usual`` (one_of would pick half and half)."""
    return st.integers(1, one_in).flatmap(lambda n: odd if n == 1 else usual)


_near_arrival = st.integers(ARRIVAL_NS - 8 * 86_400 * 10**9, ARRIVAL_NS + 2 * 3_600 * 10**9)
# Mostly near the arrival time (so spans get past the window to the checks after it).
timestamp = mostly(
    _near_arrival,
    st.one_of(
        st.integers(0, UINT64_MAX),
        st.sampled_from([0, 1, UINT64_MAX, 2**63, ARRIVAL_NS, 4_102_444_800 * 10**9]),
    ),
    one_in=4,
)
_trace_ids = [bytes([n]) * 16 for n in range(1, 4)]
_span_ids = [bytes([n]) * 8 for n in range(1, 6)]
# Mostly valid and colliding (duplicate ids), sometimes missing or of the wrong length.
_bad_id = st.one_of(st.just(b""), st.binary(min_size=1, max_size=20))
trace_id = mostly(st.sampled_from(_trace_ids), _bad_id, one_in=8)
span_id = mostly(
    st.one_of(st.sampled_from(_span_ids), st.binary(min_size=8, max_size=8)), _bad_id, one_in=8
)


@st.composite
def llm_attributes(draw: st.DrawFn) -> dict[str, Any]:
    """One family's real attributes, some values replaced, content and random keys added."""
    attrs: dict[str, Any] = dict(draw(st.sampled_from(_FAMILIES))())
    if draw(st.booleans()):
        attrs.update(f.driftline_attributes())
    for key in draw(st.lists(st.sampled_from(sorted(attrs)), max_size=6)):
        attrs[key] = draw(st.one_of(any_value, hostile_int, hostile_float, hostile_text))
    for key in draw(st.lists(st.sampled_from(CONTENT_KEYS), max_size=3)):
        attrs[key] = draw(
            st.sampled_from([CONTENT_MARKER, [CONTENT_MARKER], {"x": CONTENT_MARKER}])
        )
    attrs.update(draw(st.dictionaries(attribute_key, any_value, max_size=5)))
    return attrs


@st.composite
def hostile_span(draw: st.DrawFn) -> Span:
    start = draw(timestamp)
    after_start = st.integers(start, min(start + 10**13, UINT64_MAX))
    end = draw(mostly(after_start, timestamp, one_in=4))
    attrs = draw(mostly(llm_attributes(), st.dictionaries(attribute_key, any_value, max_size=6), 4))
    return f.make_span(
        trace_id=draw(trace_id),
        span_id=draw(span_id),
        parent_span_id=draw(st.one_of(st.just(b""), span_id)),
        name=draw(hostile_text),
        start_ns=start,
        end_ns=end,
        attributes=attrs,
        status_code=draw(st.sampled_from([f.STATUS_UNSET, f.STATUS_OK, f.STATUS_ERROR, 7])),
        status_message=draw(st.one_of(st.just(""), hostile_text)),
        kind=draw(st.integers(0, 6)),
    )


@st.composite
def parent_chain(draw: st.DrawFn) -> list[Span]:
    """A deep chain of LLM calls in one trace, each the parent of the next."""
    depth = draw(st.integers(2, 40))
    trace = draw(st.sampled_from(_trace_ids))
    start = ARRIVAL_NS - draw(st.integers(0, 86_400 * 10**9))
    spans: list[Span] = []
    parent = b""
    for i in range(depth):
        own = (i + 1).to_bytes(8, "big")
        spans.append(
            f.make_span(
                trace_id=trace,
                span_id=own,
                parent_span_id=parent,
                name="chat",
                start_ns=start + i * 1_000_000,
                attributes={**f.semconv_chat_attributes(), **f.driftline_attributes()},
            )
        )
        parent = own
    return spans


@st.composite
def traces_message(draw: st.DrawFn) -> TracesData:
    """A whole message: a few resources, each with hostile service and environment names."""
    resources = []
    for _ in range(draw(st.integers(1, 3))):
        spans = draw(st.lists(hostile_span(), min_size=1, max_size=8))
        if draw(st.integers(0, 15)) == 0:
            spans += draw(parent_chain())
        resource_attrs: dict[str, Any] = {
            a.SERVICE_NAME: draw(hostile_text),
            a.DEPLOYMENT_ENVIRONMENT_NAME: draw(any_value),
        }
        resource_attrs.update(draw(st.dictionaries(attribute_key, any_value, max_size=3)))
        resources.append(
            f.make_resource_spans(
                spans,
                resource_attributes=resource_attrs,
                scope_name=draw(st.one_of(st.just("driftline.tests"), hostile_text)),
            )
        )
    return f.traces_data(*resources)


def encoded(message: TracesData, as_json: bool) -> bytes:
    return f.to_otlp_json(message) if as_json else message.SerializeToString()
