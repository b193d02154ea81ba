"""Normalized records read from a file (``load``, ``replay``): held to what spans are held to.

A file of events is outside input like any span, whoever wrote it: the numbers are bounded
(:func:`driftline.schemas.checks.event_problem`), names are made safe as the normalizer makes
them, and JSON's missing NaN and Infinity stay missing. Files written by other tools are read
leniently where no meaning is lost: a whole number written as ``100.0`` is ``100``.
"""

from __future__ import annotations

import json
import math
from typing import Any

from driftline.schemas.checks import SAFE_NAME_FIELDS, event_problem, record_problem
from driftline.schemas.event import EVENT_FIELDS, Field
from driftline.streams.normalize import safe_name

_WHOLE_NUMBER_FIELDS = tuple(f.name for f in EVENT_FIELDS if f.kind in ("int", "ts"))
_FLAG_FIELDS = tuple(f.name for f in EVENT_FIELDS if f.kind == "bool")
_MAP_FIELDS = tuple(f.name for f in EVENT_FIELDS if f.kind == "map")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def loads_strict(line: str) -> Any:
    """``json.loads`` without Python's NaN, Infinity and -Infinity extensions.

    >>> loads_strict('{"cost_usd": NaN}')
    Traceback (most recent call last):
    ...
    ValueError: NaN is not a JSON number
    """
    return json.loads(line, parse_constant=_refuse_constant)


def checked_record(record: dict[str, Any], fields: tuple[Field, ...]) -> str | None:
    """Make ``record`` (internal form, from ``from_wire``) usable in place, or say why not.

    >>> from driftline.schemas.event import from_wire
    >>> event = from_wire({"span_id": "a", "start_ts": "2026-01-01T00:00:00Z",
    ...                    "end_ts": "2026-01-01T00:00:01Z", "output_tokens": 120.0,
    ...                    "workflow": "pay'ments"})
    >>> checked_record(event, EVENT_FIELDS), event["output_tokens"], event["workflow"]
    (None, 120, 'pay_ments~ae9da08a')
    >>> checked_record({**event, "latency_ms": -3.0}, EVENT_FIELDS)
    'latency_ms: negative'
    >>> flagged = {**event, "validation_failed": 1, "attributes": {"try": 2, "ok": True}}
    >>> checked_record(flagged, EVENT_FIELDS), flagged["validation_failed"], flagged["attributes"]
    (None, True, {'try': '2', 'ok': 'true'})
    """
    if fields is not EVENT_FIELDS:
        return record_problem(record, fields)
    _read_leniently(record)
    problem = event_problem(record)
    if problem is not None:
        return problem
    originals: dict[str, str] = {}
    for name in SAFE_NAME_FIELDS:
        record[name] = safe_name(record[name], name, originals)
    if originals:
        record["attributes"] = {**record["attributes"], **originals}
    return None


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
