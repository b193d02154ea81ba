"""Free text that the normalizer copies from a span into an event field (``error_type``,
``finish_reason``) holds no control characters, and an endpoint kept in ``attributes``
(``server.address``) holds no credentials, in protobuf and OTLP/JSON alike."""

from __future__ import annotations

from typing import Any

import pytest

from driftline.schemas import attributes as a
from driftline.streams.normalize import IngestPolicy, normalize_message, printable
from tests.utils import otlp_factory as f

TRACE_ID = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")
CALL = {
    a.GEN_AI_OPERATION_NAME: a.OP_CHAT,
    a.GEN_AI_REQUEST_MODEL: "gpt-4o",
    a.GEN_AI_USAGE_INPUT_TOKENS: 10,
    a.GEN_AI_USAGE_OUTPUT_TOKENS: 5,
}
ESCAPES = "\x1b]0;pwned\x07\x1b[2J\x1b[31mRED"
CONTROLS = "".join(map(chr, [*range(0x20), 0x7F, *range(0x80, 0xA0)]))

both_encodings = pytest.mark.parametrize("as_json", [False, True], ids=["proto", "json"])
both_policies = pytest.mark.parametrize(
    "policy", [IngestPolicy(), IngestPolicy(store_content=True)], ids=["default", "content"]
)


def event_for(
    attributes: dict[str, Any],
    as_json: bool,
    policy: IngestPolicy | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    span = f.make_span(
        trace_id=TRACE_ID, span_id=b"\x0b" * 8, attributes={**CALL, **attributes}, **kwargs
    )
    data = f.traces_data(f.make_resource_spans([span]))
    payload = f.to_otlp_json(data) if as_json else data.SerializeToString()
    batch = normalize_message(payload, policy=policy or IngestPolicy())
    assert [r.reason for r in batch.rejects] == []
    [event] = batch.events
    return event


def is_clean(text: str) -> bool:
    return not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in text)


@both_encodings
@pytest.mark.parametrize(
    "attributes, field",
    [
        ({a.ERROR_TYPE: ESCAPES}, "error_type"),
        ({a.ERROR_TYPE: CONTROLS + "Boom"}, "error_type"),
        ({a.GEN_AI_RESPONSE_FINISH_REASONS: [ESCAPES]}, "finish_reason"),
        ({a.GEN_AI_RESPONSE_FINISH_REASONS: ESCAPES}, "finish_reason"),
        ({a.GEN_AI_RESPONSE_FINISH_REASONS: '["\\u001b[2Jstop"]'}, "finish_reason"),
        ({a.LLM_FINISH_REASON: CONTROLS + "stop"}, "finish_reason"),
    ],
)
def test_control_characters_never_reach_error_type_or_finish_reason(
    attributes: dict[str, Any], field: str, as_json: bool
) -> None:
    for _ in range(2):  # the second span is served from the normalizer's memo
        value = event_for(attributes, as_json)[field]
        assert value and is_clean(value), repr(value)
        assert "\x1b" not in value and "\x07" not in value
        assert len(value) <= 512


@both_encodings
def test_the_text_around_the_control_characters_is_kept(as_json: bool) -> None:
    event = event_for(
        {a.ERROR_TYPE: ESCAPES, a.GEN_AI_RESPONSE_FINISH_REASONS: ["\x1b[31mstop"]}, as_json
    )
    assert event["error_type"] == "\ufffd]0;pwned\ufffd\ufffd[2J\ufffd[31mRED"
    assert event["finish_reason"] == "\ufffd[31mstop"


@both_encodings
@pytest.mark.parametrize("finish_reason", ["stop", "length", "tool_calls", "content_filter"])
@pytest.mark.parametrize("error_type", ["RateLimitError", "openai.APIError", "500", "timeout"])
def test_ordinary_values_are_unchanged(finish_reason: str, error_type: str, as_json: bool) -> None:
    event = event_for(
        {a.GEN_AI_RESPONSE_FINISH_REASONS: [finish_reason], a.ERROR_TYPE: error_type}, as_json
    )
    assert (event["finish_reason"], event["error_type"]) == (finish_reason, error_type)


@both_encodings
def test_an_error_status_without_error_type_still_names_the_exception(as_json: bool) -> None:
    event = event_for(
        {}, as_json, status_code=f.STATUS_ERROR, status_message="RateLimitError: slow down"
    )
    assert event["error_type"] == "RateLimitError"


@both_encodings
@both_policies
@pytest.mark.parametrize(
    "address, host",
    [
        ("https://user:s3cr3t@api.example.com:443/v1", "api.example.com"),
        ("user:s3cr3t@api.example.com", "api.example.com"),
        ("http://tok3n@10.0.0.7:8000", "10.0.0.7"),
        ("https://u:s3cr3t@[2001:db8::1]:8443/", "[2001:db8::1]"),
    ],
)
def test_credentials_in_server_address_are_not_stored(
    address: str, host: str, as_json: bool, policy: IngestPolicy
) -> None:
    for _ in range(2):
        event = event_for({"server.address": address}, as_json, policy=policy)
        assert event["attributes"]["server.address"] == host
        assert "s3cr3t" not in str(event) and "tok3n" not in str(event)


@both_encodings
@pytest.mark.parametrize("address", ["api.openai.com", "10.0.0.7", "[::1]", "api.openai.com:443"])
def test_bare_hosts_are_kept_as_sent(address: str, as_json: bool) -> None:
    event = event_for({"server.address": address}, as_json)
    assert event["attributes"]["server.address"] == address


@both_encodings
def test_a_url_is_kept_as_its_host(as_json: bool) -> None:
    # Its path or query may hold a key (a webhook's path, ?key= of some APIs).
    event = event_for({"server.address": "https://api.example.com/v1?key=k3y"}, as_json)
    assert event["attributes"]["server.address"] == "api.example.com"


@both_encodings
def test_dead_letters_carry_no_credentials_from_server_address(as_json: bool) -> None:
    span = f.make_span(
        trace_id=TRACE_ID,
        span_id=b"\x0b" * 8,
        attributes={
            **CALL,
            "server.address": "https://user:s3cr3t@api.example.com:443/v1",
            a.GEN_AI_USAGE_INPUT_TOKENS: -5,  # rejected: the span goes to the dead letters
        },
    )
    data = f.traces_data(f.make_resource_spans([span]))
    payload = f.to_otlp_json(data) if as_json else data.SerializeToString()
    [reject] = normalize_message(payload).rejects
    assert b"s3cr3t" not in reject.payload and b"api.example.com" in reject.payload
    # With the content opted in, the dead letter is the span as sent.
    [whole] = normalize_message(payload, policy=IngestPolicy(dlq_content=True)).rejects
    assert b"s3cr3t" in whole.payload


@both_encodings
@both_policies
def test_the_attributes_map_holds_no_control_characters(
    as_json: bool, policy: IngestPolicy
) -> None:
    hostile = {
        "gen_ai.response.id": ESCAPES + "\u202eabc\x00",
        "gen_ai.request.stop_sequences": [ESCAPES, CONTROLS],
        "driftline.prompt.version": CONTROLS + "v2",
        "driftline.\x1b[31mred\u202e": "v",
    }
    for _ in range(2):  # the second span is served from the normalizer's memo
        shown = event_for(hostile, as_json, policy)["attributes"]
        assert "gen_ai.response.id" in shown and "gen_ai.request.stop_sequences" in shown
        for key, value in shown.items():
            assert is_clean(key) and is_clean(value), (key, value)
            assert "\u202e" not in key + value
        assert shown["gen_ai.response.id"].endswith("abc\ufffd")


@pytest.mark.parametrize(
    "hidden", ["\u2028", "\u2029", "\u200f", "\u200e", "\u061c", "\ufeff", "\U000e0041"]
)
def test_separators_marks_and_hidden_characters_are_replaced(hidden: str) -> None:
    assert printable(f"stop{hidden}x") == "stop\ufffdx"


def test_joiners_inside_words_are_kept() -> None:
    persian = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"  # a ZWNJ inside
    emoji = "\U0001f469\u200d\U0001f4bb"  # joined by a ZWJ
    assert printable(persian) == persian and printable(emoji) == emoji
