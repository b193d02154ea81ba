"""Span attributes that would smuggle something into a stored event: credentials in an
endpoint longer than the attribute cut, a key in an endpoint's query, a forged original of a
name made safe, and a finish-reason string nested past the JSON parser's depth. Through
both OTLP encodings (protobuf takes the fast path where it can, JSON the exact one) and
through ``driftline load``'s reader of exported events."""

from __future__ import annotations

import pytest

from driftline.commands.records import AttributeBounds, bounded_attributes
from driftline.schemas import attributes as a
from driftline.streams.normalize import normalize_message
from tests.utils import otlp_factory as f

TRACE = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")
CALL = {
    a.GEN_AI_OPERATION_NAME: "chat",
    a.GEN_AI_REQUEST_MODEL: "gpt-4o",
    a.GEN_AI_USAGE_INPUT_TOKENS: 10,
    a.GEN_AI_USAGE_OUTPUT_TOKENS: 5,
}
# Longer than the default cut of free attribute values (streams.max_attribute_chars, 256).
TOKEN = "eyJhbGciOiJSUzI1NiJ9." + "Q" * 300


def _normalized(attributes: dict[str, object], as_json: bool) -> tuple[list, list]:
    span = f.make_span(trace_id=TRACE, span_id=b"\x0b" * 8, attributes={**CALL, **attributes})
    message = f.traces_data(
        f.make_resource_spans([span], resource_attributes={"service.name": "s"})
    )
    payload = f.to_otlp_json(message) if as_json else message.SerializeToString()
    batch = normalize_message(payload)
    return batch.events, batch.rejects


@pytest.mark.parametrize("as_json", [False, True], ids=["protobuf", "json"])
@pytest.mark.parametrize(
    ("address", "secret"),
    [
        (f"https://apikey:{TOKEN}@gateway.example.com/v1", "eyJhbGciOiJSUzI1NiJ9"),
        ("https://generativelanguage.googleapis.com/v1?key=AIzaSyD-SECRET", "AIzaSyD-SECRET"),
    ],
    ids=["password-past-the-cut", "key-in-query"],
)
def test_an_endpoint_is_stored_as_its_host(address: str, secret: str, as_json: bool) -> None:
    (event,), _ = _normalized({"server.address": address}, as_json)
    stored = event["attributes"]["server.address"]
    assert secret not in stored
    assert stored in ("gateway.example.com", "generativelanguage.googleapis.com")


@pytest.mark.parametrize("as_json", [False, True], ids=["protobuf", "json"])
def test_a_span_cannot_send_the_original_of_a_name(as_json: bool) -> None:
    forged = {a.ORIGINAL_NAME_PREFIX + "workflow": "support-chat", "driftline.workflow": "billing"}
    (event,), _ = _normalized(forged, as_json)
    assert event["workflow"] == "billing"
    assert a.ORIGINAL_NAME_PREFIX + "workflow" not in event["attributes"]


@pytest.mark.parametrize("as_json", [False, True], ids=["protobuf", "json"])
def test_deeply_nested_finish_reasons_are_not_an_internal_error(as_json: bool) -> None:
    nested = "[" * 5000 + "]" * 5000
    events, rejects = _normalized({a.GEN_AI_RESPONSE_FINISH_REASONS: nested}, as_json)
    assert "internal_error" not in [r.reason for r in rejects]
    assert len(events) + len(rejects) == 1


def test_load_stores_an_endpoint_as_its_host() -> None:
    bounds = AttributeBounds(max_chars=256)
    address = f"https://apikey:{TOKEN}@gateway.example.com/v1"
    out = bounded_attributes({"server.address": address}, {}, bounds)
    assert out["server.address"] == "gateway.example.com"
