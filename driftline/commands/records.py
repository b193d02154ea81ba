"""Normalized records read from a file (``load``, ``replay``): held to what spans are held to.

A file of events is outside input like any span, whoever wrote it: the numbers are bounded
(:func:`driftline.schemas.checks.event_problem`), names are made safe as the normalizer makes
them, and JSON's missing NaN and Infinity stay missing. Files written by other tools are read
leniently where no meaning is lost: a whole number written as ``100.0`` is ``100``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from driftline.schemas.attributes import ORIGINAL_NAME_PREFIX
from driftline.schemas.checks import (
    MAX_SAFE_NAME_CHARS,
    SAFE_NAME_FIELDS,
    event_problem,
    record_problem,
    trace_times_problem,
)
from driftline.schemas.event import (
    EVENT_FIELDS,
    MAX_ATTRIBUTE_VALUE_CHARS,
    MAX_EVENT_ATTRIBUTES,
    MAX_IDENTITY_CHARS,
    Field,
)
from driftline.streams.decode import SERVER_ADDRESS, without_credentials
from driftline.streams.normalize import printable, safe_name

_WHOLE_NUMBER_FIELDS = tuple(f.name for f in EVENT_FIELDS if f.kind in ("int", "ts"))
_FLAG_FIELDS = tuple(f.name for f in EVENT_FIELDS if f.kind == "bool")
_MAP_FIELDS = tuple(f.name for f in EVENT_FIELDS if f.kind == "map")
# Text the pipeline derives (a hash, the price book's name for itself): taken from a file, it
# is a name like any other and made safe as names are.
_DERIVED_NAME_FIELDS = ("bundle_id", "price_source")
# The originals a normalizer keeps of the names it made safe (the only driftline.* keys an
# event's attributes hold).
_ORIGINAL_KEYS = frozenset(
    ORIGINAL_NAME_PREFIX + name for name in SAFE_NAME_FIELDS + _DERIVED_NAME_FIELDS
)
# Free text: control characters replaced, as the normalizer replaces them.
_FREE_TEXT_FIELDS = tuple(
    f.name
    for f in EVENT_FIELDS
    if f.kind == "str" and f.name not in SAFE_NAME_FIELDS + _DERIVED_NAME_FIELDS
)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def loads_strict(line: str) -> Any:
    """``json.loads`` without Python's NaN, Infinity and -Infinity extensions.

    >>> loads_strict('{"cost_usd": NaN}')
    Traceback (most recent call last):
    ...
    ValueError: NaN is not a JSON number
    >>> loads_strict("[" * 100_000 + "]" * 100_000)
    Traceback (most recent call last):
    ...
    ValueError: nested too deeply
    """
    try:
        return json.loads(line, parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None


@dataclass(frozen=True, slots=True)
class AttributeBounds:
    """What an event's ``attributes`` may keep: the allow list (``[ingest]``) and the
    normalizer's count and length limits (``[streams]``)."""

    keep_key: Callable[[str], bool] | None = None
    max_attributes: int = MAX_EVENT_ATTRIBUTES
    max_chars: int = MAX_ATTRIBUTE_VALUE_CHARS


def checked_record(
    record: dict[str, Any], fields: tuple[Field, ...], bounds: AttributeBounds | None = None
) -> str | None:
    """Make ``record`` (internal form, from ``from_wire``) usable in place, or say why not.

    >>> from driftline.schemas.event import from_wire
    >>> event = from_wire({"trace_id": "t", "span_id": "a", "start_ts": "2026-01-01T00:00:00Z",
    ...                    "end_ts": "2026-01-01T00:00:01Z", "output_tokens": 120.0,
    ...                    "workflow": "pay'ments"})
    >>> checked_record(event, EVENT_FIELDS), event["output_tokens"], event["workflow"]
    (None, 120, 'pay_ments~ae9da08a')
    >>> checked_record({**event, "latency_ms": -3.0}, EVENT_FIELDS)
    'latency_ms: negative'
    >>> flagged = {**event, "validation_failed": 1, "attributes": {"try": 2, "ok": True}}
    >>> checked_record(flagged, EVENT_FIELDS), flagged["validation_failed"], flagged["attributes"]
    (None, True, {'ok': 'true', 'try': '2'})
    """
    if fields is not EVENT_FIELDS:
        return (
            record_problem(record, fields)
            or trace_times_problem(record)
            or _trace_text_problem(record, fields)
        )
    _read_leniently(record)
    problem = event_problem(record)
    if problem is not None:
        return problem
    originals: dict[str, str] = {}
    for name in SAFE_NAME_FIELDS + _DERIVED_NAME_FIELDS:
        record[name] = safe_name(record[name], name, originals)
    for name in _FREE_TEXT_FIELDS:
        record[name] = printable(record[name])
    record["attributes"] = bounded_attributes(
        record["attributes"], originals, bounds or AttributeBounds()
    )
    return None


def _trace_text_problem(record: dict[str, Any], fields: tuple[Field, ...]) -> str | None:
    """A trace summary's ids and names: present, bounded, made safe like an event's."""
    if not record.get("trace_id"):
        return "trace_id: missing"
    for field in fields:
        if field.kind == "str":
            most = MAX_SAFE_NAME_CHARS if field.name in SAFE_NAME_FIELDS else MAX_IDENTITY_CHARS
            if len(record[field.name]) > most:
                return f"{field.name}: longer than {most} characters"
            if field.name in SAFE_NAME_FIELDS:
                record[field.name] = safe_name(record[field.name], field.name, {})
            else:
                record[field.name] = printable(record[field.name])
    return None


def bounded_attributes(
    attributes: dict[str, str], originals: dict[str, str], bounds: AttributeBounds
) -> dict[str, str]:
    """As the normalizer keeps them: allowed keys in alphabetical order, at most
    ``max_attributes``, keys and values cut to ``max_chars``, ``server.address`` without
    credentials; then, on top, the originals of names made safe: those the file carries
    (an earlier normalizer's) and those made safe now, which win.

    >>> bounds = AttributeBounds(lambda key: key != "c", max_attributes=2, max_chars=16)
    >>> out = bounded_attributes({"b": "x" * 300, "a": "1", "c": "2", "d": "3"}, {}, bounds)
    >>> {key: len(value) for key, value in out.items()}
    {'a': 1, 'b': 16}
    >>> bounded_attributes({"driftline.original.workflow": "w'", "e": "4"}, {}, bounds)
    {'e': '4', 'driftline.original.workflow': "w'"}
    >>> bounded_attributes({"e\x1b]0;x": "\x1b[2J"}, {}, bounds)
    {'e�]0;x': '�[2J'}
    """
    cut = bounds.max_chars
    carried: dict[str, str] = {}
    free: list[str] = []
    for key in attributes:
        if key.startswith(ORIGINAL_NAME_PREFIX):
            if key in _ORIGINAL_KEYS:
                carried[key] = printable(attributes[key])  # as the normalizer keeps them
        elif bounds.keep_key is None or bounds.keep_key(key):
            free.append(key)
    # Control characters replaced, as the normalizer does: terminals, CSV files and
    # dashboards show stored attributes as they are.
    out = {
        printable(key[:cut]): printable(attributes[key][:cut])
        for key in sorted(free)[: bounds.max_attributes]
    }
    if SERVER_ADDRESS in out:  # from the whole value: a cut may fall inside a password
        out[SERVER_ADDRESS] = printable(without_credentials(attributes[SERVER_ADDRESS]))[:cut]
    out.update({key: value[:cut] for key, value in {**carried, **originals}.items()})
    return out


def _read_leniently(record: dict[str, Any]) -> None:
    """What other tools write for the same meaning: ``100.0`` for 100, ``1``/``0`` for a flag,
    numbers and flags as attribute values (the map holds strings)."""
    for name in _WHOLE_NUMBER_FIELDS:
        value = record.get(name)
        if type(value) is float and math.isfinite(value) and value.is_integer():
            record[name] = int(value)
    for name in _FLAG_FIELDS:
        if type(record.get(name)) is int and record[name] in (0, 1):
            record[name] = bool(record[name])
    for name in _MAP_FIELDS:
        value = record.get(name)
        if isinstance(value, dict) and not all(type(v) is str for v in value.values()):
            record[name] = {
                str(k): v if type(v) is str else json.dumps(v)
                for k, v in value.items()
                if v is not None
            }
