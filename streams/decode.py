"""Decode one Kafka message of OTLP traces (protobuf or OTLP/JSON) into the lean schema.

Protobuf is parsed with :mod:`schemas.otlp_lean_pb2`, which reads the same bytes as
``opentelemetry.proto.trace.v1.TracesData`` but skips what driftline never reads (see the
``.proto`` for why that is fast). ``TracesData`` and ``ExportTraceServiceRequest`` share
the wire format: field 1 holds the resource spans in both.

OTLP/JSON is converted into the same lean messages, so one normalizer serves both
encodings and gives identical events. JSON follows the OTLP/JSON rules: hex trace and
span ids, int64 as strings or numbers, lowerCamelCase keys (the proto field names are
accepted too, as the protobuf JSON mapping requires of parsers). What the lean schema
keeps as bytes is carried over as the protobuf bytes it would have held: the
instrumentation scope (whose name and version select the normalizer's scope rules) and
each span event (read for the ``exception`` event's class), as an unknown field 11 of the
span, exactly where a parsed protobuf span keeps it.

Each decoded message also knows how to re-encode one span, with its resource and scope,
for the dead-letter topic, in the encoding it arrived in: whole, or without content (only the
attributes a ``keep`` predicate accepts, no span events or links, no status message).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from google.protobuf.message import DecodeError
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.trace.v1.trace_pb2 import Span as FullSpan

from driftline.schemas import otlp_lean_pb2

# Generated code has no type stubs here; the lean classes are used dynamically.
lean: Any = otlp_lean_pb2

ContentType = Literal["otlp_proto", "otlp_json"]
SpanIndex = tuple[int, int, int]  # (resource, scope, span) positions in the message
KeyFilter = Callable[[str], bool]  # which attribute keys a redacted dead letter keeps

_JSON_WHITESPACE: Final = b" \t\r\n"
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_UINT64_MAX: Final = 2**64 - 1
_unpack_double: Final = struct.Struct("<d").unpack_from
_STATUS_CODES: Final = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
# Arrays and key-value lists nested in one attribute value, at most: a value nested deeper
# is cut there (decoded as :data:`UNDECODABLE`, left empty when read from JSON), so one
# hostile attribute costs its own depth, not the span (Python's recursion limit).
MAX_VALUE_DEPTH: Final = 32
# JSON brackets (objects and arrays) a document may nest before the parser's recursion limit
# would reject it whole: deeper containers are replaced by ``null`` (see _decode_json). A span
# attribute's value starts about 10 deep; MAX_VALUE_DEPTH levels take 4 brackets each.
_MAX_JSON_NESTING: Final = 200


class NotOtlpError(ValueError):
    """The bytes are not an OTLP traces message; send them to the dead-letter topic as is."""


@dataclass(slots=True)
class DecodedTraces:
    data: Any  # schemas.otlp_lean_pb2.TracesData
    # (span position, None for the whole span or the attribute keys to keep) -> bytes
    encode_span: Callable[[SpanIndex, KeyFilter | None], bytes]
    # Spans whose fields could not be carried into the lean message (JSON only):
    # the normalizer rejects them with this (reason, detail).
    span_errors: dict[SpanIndex, tuple[str, str]] = field(default_factory=dict)


def sniff_content_type(payload: bytes) -> ContentType:
    """OTLP/JSON is an object: ``{`` after optional whitespace, ``}`` at the end, UTF-8.

    A protobuf ``TracesData`` whose first resource is 123 bytes long also starts with
    ``b"\\n{"`` (field 1's tag, then the length): with leading whitespace, only text that
    ends with ``}`` and decodes as UTF-8 is taken for JSON.

    >>> sniff_content_type(b' {"resourceSpans": []}'), sniff_content_type(b"\\n{" + bytes(123))
    ('otlp_json', 'otlp_proto')
    """
    stripped = payload.lstrip(_JSON_WHITESPACE)
    if stripped[:1] != b"{":
        return "otlp_proto"
    if stripped is payload or len(stripped) == len(payload):
        return "otlp_json"
    if not payload.rstrip(_JSON_WHITESPACE).endswith(b"}"):
        return "otlp_proto"
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return "otlp_proto"
    return "otlp_json"


def decode_traces(payload: bytes, content_type: ContentType | None = None) -> DecodedTraces:
    """Parse ``payload``; raise :class:`NotOtlpError` if it is not OTLP traces."""
    if content_type is None:
        content_type = sniff_content_type(payload)
    if content_type == "otlp_json":
        return _decode_json(payload)
    return _decode_proto(payload)


# --- attribute values ----------------------------------------------------------------------


class UndecodableValue:
    """An attribute value whose bytes are not a valid AnyValue."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UndecodableValue()"


UNDECODABLE: Final = UndecodableValue()


def any_value_to_python(raw: bytes, depth: int = 0) -> Any:
    """The Python value of an encoded OTLP AnyValue: ``str``, ``bool``, ``int``, ``float``,
    ``bytes``, ``list`` (array), ``dict`` (key-value list), ``None`` (empty) or
    :data:`UNDECODABLE`. Arrays and key-value lists nested deeper than
    :data:`MAX_VALUE_DEPTH` (``depth`` counts the levels above ``raw``) are
    :data:`UNDECODABLE`.

    The encodings OTel SDKs produce for one scalar (a single field filling the buffer) are
    read here directly; anything else goes through the AnyValue message, which is exact.

    >>> any_value_to_python(b"\\x0a\\x04chat"), any_value_to_python(b"\\x18\\xb0\\x09")
    ('chat', 1200)
    """
    size = len(raw)
    if size < 2:
        return None if not size else _any_value_slow(raw, depth)
    tag = raw[0]
    if tag == 0x0A:  # field 1 string_value, length-delimited
        length = raw[1]
        if length < 0x80:
            if size == length + 2:
                return raw[2:].decode("utf-8", "replace")
        elif size > 2 and raw[2] < 0x80 and size == (length & 0x7F) + (raw[2] << 7) + 3:
            return raw[3:].decode("utf-8", "replace")
    elif tag == 0x18:  # field 3 int_value, varint
        if size == 2 and raw[1] < 0x80:
            return raw[1]
        value = shift = 0
        for position in range(1, min(size, 11)):
            byte = raw[position]
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                if position + 1 == size:
                    return value - (1 << 64) if value >= 1 << 63 else value
                break
            shift += 7
    elif tag == 0x21:  # field 4 double_value, fixed64
        if size == 9:
            return _unpack_double(raw, 1)[0]
    elif tag == 0x10 and size == 2 and raw[1] < 2:  # field 2 bool_value
        return raw[1] == 1
    return _any_value_slow(raw, depth)


def _any_value_slow(raw: bytes, depth: int) -> Any:
    try:
        message = lean.AnyValue.FromString(raw)
    except DecodeError:
        return UNDECODABLE
    return _any_value_message_to_python(message, depth)


def _any_value_message_to_python(message: Any, depth: int) -> Any:
    kind = message.WhichOneof("value")
    if kind is None:
        return None
    if kind == "string_value":
        text = message.string_value
        return text if type(text) is str else text.decode("utf-8", "replace")
    if kind == "array_value":
        if depth >= MAX_VALUE_DEPTH:
            return UNDECODABLE
        return [
            _any_value_message_to_python(item, depth + 1) for item in message.array_value.values
        ]
    if kind == "kvlist_value":
        return kvlist_to_python(message.kvlist_value, depth)
    return getattr(message, kind)


def kvlist_to_python(raw: bytes, depth: int = 0) -> dict[str, Any] | UndecodableValue:
    """An encoded KeyValueList (the bytes of a lean Resource) as a dict; keys that are not
    valid UTF-8 are dropped. ``depth``: as for :func:`any_value_to_python`."""
    if depth >= MAX_VALUE_DEPTH:
        return UNDECODABLE
    try:
        attrs = lean.Resource.FromString(raw).attributes
    except DecodeError:
        return UNDECODABLE
    return {
        key: any_value_to_python(attrs[key], depth + 1) for key in list(attrs) if type(key) is str
    }


# --- protobuf -------------------------------------------------------------------------


def _decode_proto(payload: bytes) -> DecodedTraces:
    try:
        data = lean.TracesData.FromString(payload)
    except DecodeError as exc:
        raise NotOtlpError(f"protobuf does not parse as OTLP TracesData: {exc}") from exc
    # Bytes that parse but hold no resource spans were not OTLP: every field was unknown.
    if payload and not len(data.resource_spans):
        raise NotOtlpError("protobuf holds no resource spans")

    def encode_span(index: SpanIndex, keep: KeyFilter | None = None) -> bytes:
        ri, si, pi = index
        rs = data.resource_spans[ri]
        ss = rs.scope_spans[si]
        out = lean.TracesData()
        rs_out = out.resource_spans.add()
        if rs.HasField("resource"):
            rs_out.resource.CopyFrom(rs.resource)  # unknown fields travel along
        if rs.HasField("schema_url"):
            rs_out.schema_url = rs.schema_url
        ss_out = rs_out.scope_spans.add()
        if ss.HasField("scope"):
            ss_out.scope = ss.scope
        if ss.HasField("schema_url"):
            ss_out.schema_url = ss.schema_url
        span_out = ss_out.spans.add()
        span_out.CopyFrom(ss.spans[pi])
        if keep is None:
            return bytes(out.SerializeToString())
        # What a redacted dead letter keeps is listed, not what it drops: a field this code
        # does not know (or one the sender made up) may hold content.
        rs_out.resource.DiscardUnknownFields()
        _drop_keys(rs_out.resource.attributes, keep)
        if ss_out.HasField("scope"):
            ss_out.scope = _only_fields(ss_out.scope, _PROTO_SCOPE_KEPT)
        _drop_keys(span_out.attributes, keep)
        if span_out.HasField("status"):
            span_out.status.ClearField("message")
            span_out.status.DiscardUnknownFields()
        # Fields the lean span does not know (events, links, kind, ...) are in its bytes.
        span_bytes = _only_fields(span_out.SerializeToString(), _PROTO_SPAN_KEPT)
        ss_out.ClearField("spans")
        ss_out.spans.add().MergeFromString(span_bytes)
        return bytes(out.SerializeToString())

    return DecodedTraces(data, encode_span)


# The Span fields a redacted dead letter keeps, each with its wire type (a field of another
# type was made up by the sender): all but events (11, with their attributes) and links (13).
_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5
_PROTO_SPAN_KEPT: Final = {
    **dict.fromkeys((1, 2, 3, 4, 5, 9, 15), _LENGTH_DELIMITED),  # ids, state, name, attributes
    **dict.fromkeys((6, 10, 12, 14), _VARINT),  # kind, dropped counts
    **dict.fromkeys((7, 8), _FIXED64),  # times
    16: _FIXED32,  # flags
}
# InstrumentationScope: name, version, dropped_attributes_count; not its attributes (3).
_PROTO_SCOPE_KEPT: Final = {1: _LENGTH_DELIMITED, 2: _LENGTH_DELIMITED, 4: _VARINT}


def _drop_keys(attributes: Any, keep: KeyFilter) -> None:
    # Rebuilt rather than deleted from: a key that is not valid UTF-8 arrives as bytes, and
    # the map cannot look it up again to delete it.
    kept = [(key, attributes[key]) for key in attributes if type(key) is str and keep(key)]
    attributes.clear()
    for key, value in kept:
        if key == SERVER_ADDRESS:
            address = any_value_to_python(value)
            if type(address) is str and address != (host := without_credentials(address)):
                value = lean.AnyValue(string_value=host).SerializeToString()
        attributes[key] = _without_unknown_fields(value)


def _without_unknown_fields(encoded: bytes) -> bytes:
    """An encoded AnyValue without fields AnyValue does not define (at any depth but inside
    a key-value list's bytes); as it was if it does not parse (it is then rejected again)."""
    try:
        value = lean.AnyValue.FromString(encoded)
    except DecodeError:
        return encoded
    value.DiscardUnknownFields()
    return bytes(value.SerializeToString())


# An attribute that names an endpoint: stored (events, redacted dead letters) as its host
# only, without the credentials a URL may carry in it.
SERVER_ADDRESS: Final = "server.address"


def without_credentials(address: str) -> str:
    """An endpoint given as a URL, or with user information (``user:password@``), reduced to
    its host: a key may sit in the user information, the path or the query. A bare host (or
    ``host:port``) as is. Give it the whole value, before any cut: a cut can fall inside the
    user information and leave no ``@`` to find.

    >>> without_credentials("https://user:secret@api.example.com:443/v1")
    'api.example.com'
    >>> without_credentials("https://generativelanguage.googleapis.com/v1?key=AIza-secret")
    'generativelanguage.googleapis.com'
    >>> without_credentials("api.openai.com"), without_credentials("[::1]")
    ('api.openai.com', '[::1]')
    >>> without_credentials("api.openai.com:443")
    'api.openai.com:443'
    >>> without_credentials("key@[2001:db8::1]:8080")
    '[2001:db8::1]'
    >>> without_credentials("gateway.internal/v1/token/abc")
    'gateway.internal'
    """
    scheme, found, rest = address.partition("://")
    if not found:
        rest = scheme
        if not any(mark in rest for mark in "@/?#"):
            return address
    host = rest
    for end in "/?#":
        host = host.split(end, 1)[0]
    host = host.rpartition("@")[2]
    if host.startswith("["):
        bracket = host.find("]")
        return host[: bracket + 1] if bracket > 0 else host
    return host.split(":", 1)[0]


def _only_fields(message: bytes, kept: dict[int, int]) -> bytes:
    """Protobuf ``message`` bytes with only its top-level fields ``kept`` (number: wire
    type) that have that wire type; from a field that cannot be read on (a group, a length
    past the end) on, nothing.

    >>> _only_fields(bytes([0x08, 0x01, 0x5A, 0x01, 0x41, 0x10, 0x02]), {1: 0, 2: 0})
    b'\\x08\\x01\\x10\\x02'
    >>> _only_fields(bytes([0x0A, 0x01, 0x41, 0x10, 0x02]), {1: 0, 2: 0})  # 1 is not a varint
    b'\\x10\\x02'
    """
    out = bytearray()
    position = 0
    while position < len(message):
        start = position
        try:
            tag, position = _varint(message, position)
            wire_type = tag & 7
            if wire_type == 0:
                _, position = _varint(message, position)
            elif wire_type == 1:
                position += 8
            elif wire_type == 2:
                length, position = _varint(message, position)
                position += length
            elif wire_type == 5:
                position += 4
            else:  # groups are not used by OTLP
                break
        except IndexError:  # a varint cut off by the end (a scope's bytes are not parsed)
            break
        if position > len(message):
            break
        if kept.get(tag >> 3) == wire_type:
            out += message[start:position]
    return bytes(out)


def _varint(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7


# --- OTLP/JSON ---------------------------------------------------------------------------


def _decode_json(payload: bytes) -> DecodedTraces:
    try:
        doc = json.loads(payload)
    except RecursionError:
        # Nested too deep for the parser: cut what lies deeper than any OTLP field needs,
        # so one hostile attribute value costs that value, not the document.
        try:
            doc = json.loads(_cut_deep_json(payload, _MAX_JSON_NESTING))
        except (ValueError, RecursionError) as exc:
            raise NotOtlpError(f"not valid JSON: {exc}") from exc
    except ValueError as exc:
        raise NotOtlpError(f"not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise NotOtlpError("OTLP/JSON must be an object with resourceSpans")
    resource_docs = _list(doc, "resourceSpans", "resource_spans")
    if resource_docs is None:
        raise NotOtlpError("JSON object has no resourceSpans list")
    data = lean.TracesData()
    errors: dict[SpanIndex, tuple[str, str]] = {}
    for ri, rs_doc in enumerate(resource_docs):
        _require_object(rs_doc, "resourceSpans entry")
        rs = data.resource_spans.add()
        resource_doc = rs_doc.get("resource")
        if isinstance(resource_doc, dict):
            # Not a list: every span of the resource would lose its service and workflow.
            _set_attributes(rs.resource.attributes, _list(resource_doc, "attributes", "attributes"))
        schema_url = _get(rs_doc, "schemaUrl", "schema_url")
        if isinstance(schema_url, str):
            rs.schema_url = _text(schema_url)
        for si, ss_doc in enumerate(_list(rs_doc, "scopeSpans", "scope_spans") or ()):
            _require_object(ss_doc, "scopeSpans entry")
            ss = rs.scope_spans.add()
            scope_doc = ss_doc.get("scope")
            if isinstance(scope_doc, dict):
                ss.scope = _scope_bytes(scope_doc)
            for pi, span_doc in enumerate(_list(ss_doc, "spans", "spans") or ()):
                _require_object(span_doc, "span")
                error = _set_span(ss.spans.add(), span_doc)
                if error is not None:
                    errors[(ri, si, pi)] = error

    def encode_span(index: SpanIndex, keep: KeyFilter | None = None) -> bytes:
        # The original JSON of the span, resource and scope: lossless, in the input encoding.
        ri, si, pi = index
        rs_doc = resource_docs[ri]
        ss_doc = _list(rs_doc, "scopeSpans", "scope_spans")[si]  # type: ignore[index]
        span_doc = _list(ss_doc, "spans", "spans")[pi]  # type: ignore[index]
        scope_out = {k: v for k, v in ss_doc.items() if k not in ("spans",)}
        rs_out = {k: v for k, v in rs_doc.items() if k not in ("scopeSpans", "scope_spans")}
        if keep is not None:
            # What a redacted dead letter keeps is listed, not what it drops: a field this
            # code does not know (or one the sender made up) may hold content.
            span_doc = _redacted_span_doc(span_doc, keep)
            scope_out = _only(scope_out, _JSON_SCOPE_SPANS_KEPT)
            if isinstance(scope_out.get("scope"), dict):
                scope_out["scope"] = _only(scope_out["scope"], _JSON_SCOPE_KEPT)
            rs_out = _only(rs_out, _JSON_RESOURCE_SPANS_KEPT)
            if isinstance(rs_out.get("resource"), dict):
                resource = _only(rs_out["resource"], _JSON_RESOURCE_KEPT)
                rs_out["resource"] = _with_kept_attributes(resource, keep)
        rs_out["scopeSpans"] = [{**scope_out, "spans": [span_doc]}]
        return json.dumps({"resourceSpans": [rs_out]}).encode()

    return DecodedTraces(data, encode_span, errors)


_JSON_TOKEN: Final = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _cut_deep_json(payload: bytes, max_nesting: int) -> bytes:
    """``payload`` with every object or array opened deeper than ``max_nesting`` replaced by
    ``null`` (strings are skipped whole; invalid JSON stays invalid).

    >>> _cut_deep_json(b'{"a": [1, {"b": [2]}], "c": "[{"}', 2)
    b'{"a": [1, null], "c": "[{"}'
    """
    out = bytearray()
    depth = 0
    copied = 0  # payload[:copied] is in out (or cut)
    cut_from = -1  # where the container being cut opened
    for match in _JSON_TOKEN.finditer(payload):
        token = match.group()
        if token[0] == 0x22:  # a string
            continue
        if token in b"[{":
            depth += 1
            if depth == max_nesting + 1:
                cut_from = match.start()
        elif depth > 0:
            depth -= 1
            if depth == max_nesting:
                out += payload[copied:cut_from] + b"null"
                copied = match.end()
    out += payload[copied:]
    return bytes(out)


def _both_spellings(*names: str) -> frozenset[str]:
    """OTLP/JSON field names in lowerCamelCase and as in the proto (both are accepted)."""
    snake = (re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower() for name in names)
    return frozenset(names) | frozenset(snake)


# The fields a redacted OTLP/JSON dead letter keeps: no events, links, status message or
# scope attributes, nothing unknown.
_JSON_SPAN_KEPT: Final = _both_spellings(
    "traceId", "spanId", "traceState", "parentSpanId", "flags", "name", "kind",
    "startTimeUnixNano", "endTimeUnixNano", "attributes", "droppedAttributesCount",
    "droppedEventsCount", "droppedLinksCount", "status",
)  # fmt: skip
_JSON_STATUS_KEPT: Final = frozenset({"code"})
_JSON_SCOPE_KEPT: Final = _both_spellings("name", "version", "droppedAttributesCount")
_JSON_SCOPE_SPANS_KEPT: Final = _both_spellings("scope", "schemaUrl")
_JSON_RESOURCE_SPANS_KEPT: Final = _both_spellings("resource", "schemaUrl")
_JSON_RESOURCE_KEPT: Final = _both_spellings("attributes", "droppedAttributesCount")


def _only(doc: dict[str, Any], kept: frozenset[str]) -> dict[str, Any]:
    """The fields of ``doc`` named in ``kept`` that hold a scalar or ``attributes``'s list
    or ``status``'s / ``scope``'s / ``resource``'s / ``value``'s object; no other shape."""
    return {
        k: v
        for k, v in doc.items()
        if k in kept and (type(v) in _JSON_SCALARS or type(v) is _JSON_SHAPES.get(k))
    }


_JSON_SCALARS: Final = frozenset({str, int, float, bool, type(None)})
_JSON_SHAPES: Final = {
    "attributes": list,
    "status": dict,
    "scope": dict,
    "resource": dict,
    "value": dict,
}


def _redacted_span_doc(span_doc: dict[str, Any], keep: KeyFilter) -> dict[str, Any]:
    out = _with_kept_attributes(_only(span_doc, _JSON_SPAN_KEPT), keep)
    if span_doc.get("attributes") is not None and "attributes" not in out:
        out["attributes"] = ""  # its content goes, its shape stays: rejected for it again
    status = out.get("status")
    if isinstance(status, dict):
        out["status"] = _only(status, _JSON_STATUS_KEPT)
    return out


def _with_kept_attributes(doc: dict[str, Any], keep: KeyFilter) -> dict[str, Any]:
    """``doc`` (passed through :func:`_only`: its attributes, if any, are a list) with the
    attributes ``keep`` accepts, each as :func:`_kept_attribute` makes it."""
    attributes = doc.get("attributes")
    if attributes is None:
        return doc
    kept = [
        _kept_attribute(kv)
        for kv in attributes
        if isinstance(kv, dict) and isinstance(kv.get("key"), str) and keep(kv["key"])
    ]
    return {**doc, "attributes": kept}


def _kept_attribute(kv: dict[str, Any]) -> dict[str, Any]:
    value = _json_any_value(kv.get("value"))
    address = _get(value, "stringValue", "string_value")
    if kv["key"] == SERVER_ADDRESS and isinstance(address, str) and "@" in address:
        value = {"stringValue": without_credentials(address)}
    return {"key": kv["key"], "value": value}


_JSON_SCALAR_VALUES: Final = _both_spellings(
    "stringValue", "boolValue", "intValue", "doubleValue", "bytesValue"
)
_JSON_LIST_VALUES: Final = _both_spellings("arrayValue", "kvlistValue")


def _json_any_value(doc: Any, depth: int = 0) -> dict[str, Any]:
    """An OTLP/JSON AnyValue with nothing the mapping does not define, at any depth."""
    if not isinstance(doc, dict) or depth > MAX_VALUE_DEPTH:
        return {}
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if key in _JSON_SCALAR_VALUES and type(value) in _JSON_SCALARS:
            out[key] = value
        elif key in _JSON_LIST_VALUES and isinstance(value, dict):
            items = value.get("values")
            if key.startswith("array"):
                kept = [_json_any_value(item, depth + 1) for item in _as_list(items)]
            else:
                kept = [
                    {"key": kv.get("key"), "value": _json_any_value(kv.get("value"), depth + 1)}
                    for kv in _as_list(items)
                    if isinstance(kv, dict) and type(kv.get("key")) is str
                ]
            out[key] = {"values": kept} if "values" in value else {}
    return out


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _get(doc: dict[str, Any], camel: str, snake: str) -> Any:
    value = doc.get(camel)
    return doc.get(snake) if value is None else value


def _list(doc: dict[str, Any], camel: str, snake: str) -> list[Any] | None:
    value = _get(doc, camel, snake)
    if value is None:
        return []
    if not isinstance(value, list):
        raise NotOtlpError(f"{camel} must be a list, got {type(value).__name__}")
    return value


def _require_object(value: Any, what: str) -> None:
    if not isinstance(value, dict):
        raise NotOtlpError(f"each {what} must be an object, got {type(value).__name__}")


def _set_span(span: Any, doc: dict[str, Any]) -> tuple[str, str] | None:
    """Fill a lean span from its JSON; return (reason, detail) if the span is malformed."""
    error: tuple[str, str] | None = None
    for camel, snake in (
        ("traceId", "trace_id"),
        ("spanId", "span_id"),
        ("parentSpanId", "parent_span_id"),
    ):
        text = _get(doc, camel, snake)
        if text is None or text == "":
            continue
        raw = _hex_id(text)
        if raw is None:
            error = error or ("bad_id_encoding", f"{camel} {str(text)[:64]!r} is not hex")
        else:
            setattr(span, snake, raw)
    name = doc.get("name")
    if isinstance(name, str):
        span.name = _text(name)
    for camel, snake in (
        ("startTimeUnixNano", "start_time_unix_nano"),
        ("endTimeUnixNano", "end_time_unix_nano"),
    ):
        value = _get(doc, camel, snake)
        if value is None:
            continue
        nanos = _uint64(value)
        if nanos is None:
            error = error or ("bad_timestamps", f"{camel} {str(value)[:64]!r} is not a uint64")
        else:
            setattr(span, snake, nanos)
    attributes = doc.get("attributes")
    if attributes is not None and not isinstance(attributes, list):
        # Read as none, an LLM span would pass for another kind and be skipped unseen.
        error = error or ("bad_attributes", f"attributes is a {type(attributes).__name__}")
    _set_attributes(span.attributes, attributes)
    events = doc.get("events")
    if isinstance(events, list) and events:
        # Unknown to the lean span, as in a parsed protobuf span: field 11, one per event.
        span.MergeFromString(
            b"".join(
                _length_delimited(_SPAN_EVENTS_TAG, _event_bytes(event))
                for event in events
                if isinstance(event, dict)
            )
        )
    status = doc.get("status")
    if isinstance(status, dict):
        code = status.get("code")
        if isinstance(code, str):
            code = _STATUS_CODES.get(code, _uint64(code) or 0)
        if isinstance(code, int) and not isinstance(code, bool) and 0 <= code <= 2**31 - 1:
            span.status.code = code
        message = status.get("message")
        if isinstance(message, str):
            span.status.message = _text(message)
    return error


_SPAN_EVENTS_TAG: Final = bytes([11 << 3 | 2])  # Span.events: field 11, length-delimited


def _length_delimited(tag: bytes, payload: bytes) -> bytes:
    size = len(payload)
    prefix = bytearray(tag)
    while size >= 0x80:
        prefix.append(size & 0x7F | 0x80)
        size >>= 7
    prefix.append(size)
    return bytes(prefix) + payload


def _scope_bytes(doc: dict[str, Any]) -> bytes:
    """The protobuf bytes of an OTLP/JSON ``InstrumentationScope``; fields of the wrong
    type are left out, as a protobuf parser would never see them."""
    scope = InstrumentationScope()
    for name in ("name", "version"):
        value = doc.get(name)
        if isinstance(value, str):
            setattr(scope, name, _text(value))
    _set_key_values(scope.attributes, doc.get("attributes"))
    dropped = _uint64(_get(doc, "droppedAttributesCount", "dropped_attributes_count"))
    if dropped is not None and dropped < 2**32:
        scope.dropped_attributes_count = dropped
    return bytes(scope.SerializeToString())


def _event_bytes(doc: dict[str, Any]) -> bytes:
    """The protobuf bytes of an OTLP/JSON span event (``Span.Event``)."""
    event = FullSpan.Event()
    nanos = _uint64(_get(doc, "timeUnixNano", "time_unix_nano"))
    if nanos is not None:
        event.time_unix_nano = nanos
    name = doc.get("name")
    if isinstance(name, str):
        event.name = _text(name)
    _set_key_values(event.attributes, doc.get("attributes"))
    dropped = _uint64(_get(doc, "droppedAttributesCount", "dropped_attributes_count"))
    if dropped is not None and dropped < 2**32:
        event.dropped_attributes_count = dropped
    return bytes(event.SerializeToString())


def _set_key_values(target: Any, docs: Any) -> None:
    """Append an OTLP/JSON ``[{key, value}]`` list to a repeated ``KeyValue`` field, keys
    and values read as span attributes are."""
    if not isinstance(docs, list):
        return
    for kv in docs:
        if isinstance(kv, dict) and isinstance(key := kv.get("key", ""), str):
            value = lean.AnyValue()
            _set_any_value(value, kv.get("value"))
            # The lean AnyValue has the wire format of the full one.
            target.add(key=_text(key)).value.MergeFromString(value.SerializeToString())


def _hex_id(text: Any) -> bytes | None:
    if not isinstance(text, str):
        return None
    try:
        return binascii.a2b_hex(text.encode("ascii"))
    except (binascii.Error, UnicodeEncodeError):
        return None


def _uint64(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        if not (value.isascii() and value.isdigit() and len(value) <= 20):
            return None
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and 0 <= value <= _UINT64_MAX:
        return value
    return None


def _set_attributes(target: Any, docs: Any) -> None:
    """Copy an OTLP/JSON ``[{key, value}]`` list into a lean attribute map (last key wins,
    as in protobuf map parsing). A missing key is the empty one (the JSON mapping leaves
    default values out); entries whose key is not a string are dropped."""
    if not isinstance(docs, list):
        return
    for kv in docs:
        if isinstance(kv, dict) and isinstance(key := kv.get("key", ""), str):
            value = lean.AnyValue()
            _set_any_value(value, kv.get("value"))
            target[_text(key)] = value.SerializeToString()


def _set_any_value(target: Any, doc: Any, depth: int = 0) -> None:
    """Fill a lean AnyValue from OTLP/JSON. A value of the wrong JSON type is kept as a
    string, so typed fields downstream reject it as ``wrong_type`` instead of losing it.
    An array or key-value list nested deeper than :data:`MAX_VALUE_DEPTH` is left empty."""
    if not isinstance(doc, dict):
        return
    if (v := _get(doc, "stringValue", "string_value")) is not None:
        target.string_value = _as_text(v)
    elif (v := _get(doc, "intValue", "int_value")) is not None:
        number = _int64(v)
        if number is None:
            target.string_value = _as_text(v)
        else:
            target.int_value = number
    elif (v := _get(doc, "doubleValue", "double_value")) is not None:
        real = _double(v)
        if real is None:
            target.string_value = _as_text(v)
        else:
            target.double_value = real
    elif (v := _get(doc, "boolValue", "bool_value")) is not None:
        if isinstance(v, bool):
            target.bool_value = v
        else:
            target.string_value = _as_text(v)
    elif (v := _get(doc, "arrayValue", "array_value")) is not None:
        if depth >= MAX_VALUE_DEPTH:
            return
        target.array_value.SetInParent()
        items = v.get("values") if isinstance(v, dict) else None
        for item in items if isinstance(items, list) else ():
            _set_any_value(target.array_value.values.add(), item, depth + 1)
    elif (v := _get(doc, "kvlistValue", "kvlist_value")) is not None:
        if depth >= MAX_VALUE_DEPTH:
            return
        values = v.get("values") if isinstance(v, dict) else None
        target.kvlist_value = _kvlist_bytes(values, depth + 1)
    elif (v := _get(doc, "bytesValue", "bytes_value")) is not None:
        try:
            target.bytes_value = base64.b64decode(v, validate=True)
        except (binascii.Error, TypeError, ValueError):
            target.string_value = _as_text(v)


_KEY_VALUE_TAG: Final = b"\x0a"  # KeyValueList.values and KeyValue.key: field 1
_VALUE_TAG: Final = b"\x12"  # KeyValue.value: field 2


def _kvlist_bytes(docs: Any, depth: int = 0) -> bytes:
    """The protobuf bytes of a KeyValueList from OTLP/JSON ``values``, entry by entry in
    their order (duplicates too), as a protobuf producer would have written them."""
    if not isinstance(docs, list):
        return b""
    out = []
    for kv in docs:
        if isinstance(kv, dict) and isinstance(key := kv.get("key", ""), str):
            value = lean.AnyValue()
            _set_any_value(value, kv.get("value"), depth)
            entry = _length_delimited(_KEY_VALUE_TAG, _text(key).encode()) + _length_delimited(
                _VALUE_TAG, value.SerializeToString()
            )
            out.append(_length_delimited(_KEY_VALUE_TAG, entry))
    return b"".join(out)


_JSON_INT64: Final = re.compile(r"-?[0-9]{1,19}")


def _int64(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        # Decimal digits only, as the proto3 JSON mapping writes them: Python's int() also
        # takes spaces, underscores and other scripts' digits.
        if _JSON_INT64.fullmatch(value) is None:
            return None
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and _INT64_MIN <= value <= _INT64_MAX:
        return value
    return None


def _double(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        return value
    if isinstance(value, int):
        return float(value) if abs(value) < 2**1023 else None
    if isinstance(value, str):
        try:
            real = float(value)  # accepts "NaN", "Infinity", "-Infinity" as OTLP/JSON does
        except ValueError:
            return None
        return real if math.isfinite(real) or value in ("NaN", "Infinity", "-Infinity") else None
    return None


def _text(value: str) -> str:
    """JSON may carry lone surrogates (``"\\ud800"``), which protobuf cannot store."""
    if value.isascii():
        return value
    return value.encode("utf-8", "replace").decode("utf-8")


def _as_text(value: Any) -> str:
    return _text(value) if isinstance(value, str) else json.dumps(value)
