"""streams.decode bounds how deeply one attribute value nests: a hostile value is cut there,
and the span (and the document) it came in is kept, in protobuf and OTLP/JSON alike."""

from __future__ import annotations

import json
from typing import Any

import pytest

from driftline.schemas import attributes as a
from driftline.streams.decode import (
    MAX_VALUE_DEPTH,
    UNDECODABLE,
    _length_delimited,
    any_value_to_python,
    decode_traces,
)
from driftline.streams.normalize import IngestPolicy, normalize_message
from tests.utils import otlp_factory as f

TRACE_ID = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")
CALL = {
    a.GEN_AI_OPERATION_NAME: a.OP_CHAT,
    a.GEN_AI_REQUEST_MODEL: "gpt-4o",
    a.GEN_AI_USAGE_INPUT_TOKENS: 10,
    a.GEN_AI_USAGE_OUTPUT_TOKENS: 5,
}
KEEP_ALL = IngestPolicy(store_content=True)


def nested_kvlist_bytes(levels: int) -> bytes:
    """An encoded AnyValue: ``levels`` key-value lists, one inside the other, around "x"."""
    value = _length_delimited(b"\x0a", b"x")
    for _ in range(levels):
        entry = _length_delimited(b"\x0a", b"k") + _length_delimited(b"\x12", value)
        value = _length_delimited(b"\x32", _length_delimited(b"\x0a", entry))
    return value


def nested_array_bytes(levels: int) -> bytes:
    value = _length_delimited(b"\x0a", b"x")
    for _ in range(levels):
        value = _length_delimited(b"\x2a", _length_delimited(b"\x0a", value))
    return value


def nested_json(levels: int, kind: str) -> str:
    if kind == "kvlist":
        head, tail = '{"kvlistValue": {"values": [{"key": "k", "value": ', "}]}}"
    else:
        head, tail = '{"arrayValue": {"values": [', "]}}"
    return head * levels + '{"stringValue": "x"}' + tail * levels


def message(value_bytes: bytes | None, value_json: str | None, *, key: str) -> bytes:
    """One LLM-call span whose attribute ``key`` holds the given value (protobuf bytes of an
    AnyValue, or its OTLP/JSON text)."""
    span = f.make_span(
        trace_id=TRACE_ID, span_id=b"\x0b" * 8, attributes={**CALL, key: "PLACEHOLDER"}
    )
    data = f.traces_data(f.make_resource_spans([span]))
    payload = f.to_otlp_json(data)
    if value_json is not None:
        text = payload.decode()
        placeholder = json.dumps({"stringValue": "PLACEHOLDER"}, separators=(",", ":"))
        if placeholder not in text:
            placeholder = json.dumps({"stringValue": "PLACEHOLDER"})
        assert placeholder in text
        return text.replace(placeholder, value_json).encode()
    # Protobuf: the lean message holds each attribute as its AnyValue bytes.
    lean_data = decode_traces(payload, "otlp_json").data
    lean_data.resource_spans[0].scope_spans[0].spans[0].attributes[key] = value_bytes
    return bytes(lean_data.SerializeToString())


def depth_of(value: Any) -> int:
    depth = 0
    while isinstance(value, dict | list) and value:
        value = value["k"] if isinstance(value, dict) else value[0]
        depth += 1
    return depth


@pytest.mark.parametrize("build", [nested_kvlist_bytes, nested_array_bytes])
def test_values_nested_deeper_than_the_bound_are_cut_not_raised(build: Any) -> None:
    assert depth_of(any_value_to_python(build(MAX_VALUE_DEPTH))) == MAX_VALUE_DEPTH
    for levels in (MAX_VALUE_DEPTH + 1, 50, 200, 3000):
        value = any_value_to_python(build(levels))
        if build is nested_array_bytes and levels > 50:
            # Beyond the protobuf parser's own limit (100 messages, 2 a level): dropped whole.
            assert value is UNDECODABLE
            continue
        assert depth_of(value) == MAX_VALUE_DEPTH
        inner = value
        for _ in range(MAX_VALUE_DEPTH):
            inner = inner["k"] if isinstance(inner, dict) else inner[0]
        assert inner is UNDECODABLE


@pytest.mark.parametrize("levels", [200, 3000])
@pytest.mark.parametrize("kind", ["kvlist", "array"])
@pytest.mark.parametrize("encoding", ["proto", "json"])
@pytest.mark.parametrize("key", ["some.unread.key", "gen_ai.usage.details"])
def test_a_deeply_nested_attribute_costs_the_value_not_the_span(
    levels: int, kind: str, encoding: str, key: str
) -> None:
    if encoding == "json":
        payload = message(None, nested_json(levels, kind), key=key)
    else:
        build = nested_kvlist_bytes if kind == "kvlist" else nested_array_bytes
        payload = message(build(levels), None, key=key)
    for policy in (IngestPolicy(), KEEP_ALL):
        batch = normalize_message(payload, policy=policy)
        assert [r.reason for r in batch.rejects] == []
        assert len(batch.events) == 1
        event = batch.events[0]
        assert event["input_tokens"] == 10
        if event["attributes"].get(key):
            kept = json.loads(event["attributes"][key])
            assert depth_of(kept) <= MAX_VALUE_DEPTH + 1


@pytest.mark.parametrize("kind", ["kvlist", "array"])
def test_protobuf_and_json_cut_a_deep_value_alike(kind: str) -> None:
    levels = MAX_VALUE_DEPTH + 5
    build = nested_kvlist_bytes if kind == "kvlist" else nested_array_bytes
    key = "some.unread.key"
    proto = normalize_message(message(build(levels), None, key=key), policy=KEEP_ALL)
    as_json = normalize_message(message(None, nested_json(levels, kind), key=key), policy=KEEP_ALL)
    assert proto.events[0]["attributes"][key] == as_json.events[0]["attributes"][key]


def test_a_value_within_the_bound_is_kept_whole() -> None:
    key = "some.unread.key"
    batch = normalize_message(
        message(None, nested_json(MAX_VALUE_DEPTH, "kvlist"), key=key), policy=KEEP_ALL
    )
    assert depth_of(json.loads(batch.events[0]["attributes"][key])) == MAX_VALUE_DEPTH
