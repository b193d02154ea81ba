"""streams.decode: the lean schema reads OTLP bytes faithfully, in protobuf and OTLP/JSON."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, TracesData

from driftline.schemas import attributes as a
from driftline.streams.decode import (
    UNDECODABLE,
    NotOtlpError,
    any_value_to_python,
    decode_traces,
    kvlist_to_python,
    sniff_content_type,
)
from tests.utils import otlp_factory as f

TRACE_ID = bytes(range(1, 17))
SPAN_ID = bytes(range(1, 9))


def sample() -> TracesData:
    span = f.make_span(
        trace_id=TRACE_ID,
        span_id=SPAN_ID,
        name="chat gpt-4o",
        attributes={a.GEN_AI_REQUEST_MODEL: "gpt-4o", a.GEN_AI_USAGE_INPUT_TOKENS: 12},
        status_code=f.STATUS_ERROR,
        status_message="boom",
    )
    span.events.add(name="exception")  # undeclared in the lean schema
    return f.traces_data(f.make_resource_spans([span]))


def test_sniff_content_type() -> None:
    assert sniff_content_type(b'  \n{"resourceSpans": []}') == "otlp_json"
    assert sniff_content_type(sample().SerializeToString()) == "otlp_proto"
    assert sniff_content_type(b"") == "otlp_proto"


@pytest.mark.parametrize("encode", ["proto", "json"])
def test_lean_message_holds_what_the_normalizer_reads(encode: str) -> None:
    message = sample()
    payload = message.SerializeToString() if encode == "proto" else f.to_otlp_json(message)
    span = decode_traces(payload).data.resource_spans[0].scope_spans[0].spans[0]
    assert (span.trace_id, span.span_id, span.parent_span_id) == (TRACE_ID, SPAN_ID, b"")
    assert span.name == "chat gpt-4o"
    assert span.start_time_unix_nano == f.BASE_TIME_NS
    assert (span.status.code, span.status.message) == (2, "boom")
    assert any_value_to_python(span.attributes[a.GEN_AI_REQUEST_MODEL]) == "gpt-4o"
    assert any_value_to_python(span.attributes[a.GEN_AI_USAGE_INPUT_TOKENS]) == 12


def test_export_request_and_traces_data_parse_alike() -> None:
    message = sample()
    request = f.export_request(*message.resource_spans)
    assert request.SerializeToString() == message.SerializeToString()  # same wire format
    lean = decode_traces(request.SerializeToString()).data
    assert len(lean.resource_spans[0].scope_spans[0].spans) == 1


def test_protobuf_dead_letter_copy_is_lossless() -> None:
    message = sample()
    decoded = decode_traces(message.SerializeToString())
    copy = TracesData.FromString(decoded.encode_span((0, 0, 0)))
    assert copy.resource_spans[0].resource == message.resource_spans[0].resource
    assert (
        copy.resource_spans[0].scope_spans[0].scope
        == message.resource_spans[0].scope_spans[0].scope
    )
    original: Span = message.resource_spans[0].scope_spans[0].spans[0]
    (span,) = copy.resource_spans[0].scope_spans[0].spans
    assert [e.name for e in span.events] == ["exception"]  # unknown to the lean schema, kept
    assert (span.kind, span.status) == (original.kind, original.status)


@pytest.mark.parametrize(
    "payload",
    [b"\x0a\xff", b"plain text that is not protobuf", b'{"resourceSpans": "x"}', b"[]", b"{"],
)
def test_not_otlp(payload: bytes) -> None:
    with pytest.raises(NotOtlpError):
        decode_traces(payload)


def test_json_accepts_proto_field_names_and_numeric_int64() -> None:
    doc = {
        "resource_spans": [
            {
                "scope_spans": [
                    {
                        "spans": [
                            {
                                "trace_id": TRACE_ID.hex(),
                                "span_id": SPAN_ID.hex(),
                                "start_time_unix_nano": 5,
                                "end_time_unix_nano": "7",
                                "attributes": [
                                    {"key": "n", "value": {"int_value": 3}},
                                    {"key": "s", "value": {"intValue": "4"}},
                                    {"key": "d", "value": {"doubleValue": "NaN"}},
                                ],
                                "status": {"code": "STATUS_CODE_OK"},
                            }
                        ]
                    }
                ]
            }
        ]
    }
    span = decode_traces(json.dumps(doc).encode()).data.resource_spans[0].scope_spans[0].spans[0]
    assert (span.start_time_unix_nano, span.end_time_unix_nano, span.status.code) == (5, 7, 1)
    assert any_value_to_python(span.attributes["n"]) == 3
    assert any_value_to_python(span.attributes["s"]) == 4
    assert math.isnan(any_value_to_python(span.attributes["d"]))


def test_json_span_with_bad_hex_id_is_flagged_not_fatal() -> None:
    doc = {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz", "spanId": "01"}]}]}]}
    decoded = decode_traces(json.dumps(doc).encode())
    assert decoded.span_errors[(0, 0, 0)][0] == "bad_id_encoding"


@pytest.mark.parametrize("attributes", ["gen_ai.system=openai", {"key": "k"}, 3])
def test_json_span_whose_attributes_are_not_a_list_is_flagged(attributes: object) -> None:
    span = {"traceId": "01" * 16, "spanId": "02" * 8, "attributes": attributes}
    doc = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
    decoded = decode_traces(json.dumps(doc).encode())
    assert decoded.span_errors[(0, 0, 0)][0] == "bad_attributes"


def test_json_resource_whose_attributes_are_not_a_list_is_not_otlp() -> None:
    doc = {"resourceSpans": [{"resource": {"attributes": "service.name=x"}, "scopeSpans": []}]}
    with pytest.raises(NotOtlpError, match="attributes must be a list"):
        decode_traces(json.dumps(doc).encode())


def test_json_values_of_the_wrong_type_are_kept_as_strings() -> None:
    doc = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "attributes": [
                                    {"key": "tokens", "value": {"intValue": "twelve"}},
                                    {"key": "flag", "value": {"boolValue": "yes"}},
                                ]
                            }
                        ]
                    }
                ]
            }
        ]
    }
    span = decode_traces(json.dumps(doc).encode()).data.resource_spans[0].scope_spans[0].spans[0]
    assert any_value_to_python(span.attributes["tokens"]) == "twelve"
    assert any_value_to_python(span.attributes["flag"]) == "yes"


@pytest.mark.parametrize(
    ("text", "value"),
    [("12", 12), ("-5", -5), (" 12", " 12"), ("1_200", "1_200"), ("+5", "+5"), ("١٢", "١٢")],
)
def test_json_int_values_are_decimal_digits(text: str, value: int | str) -> None:
    attribute = {"key": "tokens", "value": {"intValue": text}}
    doc = {"resourceSpans": [{"scopeSpans": [{"spans": [{"attributes": [attribute]}]}]}]}
    span = decode_traces(json.dumps(doc).encode()).data.resource_spans[0].scope_spans[0].spans[0]
    assert any_value_to_python(span.attributes["tokens"]) == value


scalars = st.one_of(
    st.text(max_size=300),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.binary(max_size=20),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(values)
def test_any_value_decoding_matches_the_official_parser(value: Any) -> None:
    encoded = f.any_value(value).SerializeToString()
    assert any_value_to_python(encoded) == _official(AnyValue.FromString(encoded))


LEAN_VALUE_KINDS = {
    None,
    "string_value",
    "bool_value",
    "int_value",
    "double_value",
    "array_value",
    "kvlist_value",
    "bytes_value",
}


def _official(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_official(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _official(kv.value) for kv in value.kvlist_value.values}
    return None if kind is None else getattr(value, kind)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40))
def test_any_value_decoding_of_arbitrary_bytes_never_raises(raw: bytes) -> None:
    try:
        official = AnyValue.FromString(raw)
        expected = _official(official)
    except Exception:  # invalid for the official parser too (e.g. bad UTF-8)
        any_value_to_python(raw)
        return
    if official.WhichOneof("value") not in LEAN_VALUE_KINDS:
        return  # a newer field (profiles' string table index): unknown to traces
    decoded = any_value_to_python(raw)
    assert decoded is UNDECODABLE or decoded == expected or _both_nan(decoded, expected)


def _both_nan(x: Any, y: Any) -> bool:
    return isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y)


def test_kvlist_to_python() -> None:
    encoded = f.any_value({"a": 1, "b": ["x"]}).kvlist_value.SerializeToString()
    assert kvlist_to_python(encoded) == {"a": 1, "b": ["x"]}
    assert kvlist_to_python(b"\x0a\xff") is UNDECODABLE
