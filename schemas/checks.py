"""Whether a record read back from an internal topic has the types its fields promise.

``llm_events`` is written by driftline's own decode stage, but anyone who can write the
topic can put anything there; the store and the monitor trust the field kinds
(:data:`~driftline.schemas.event.EVENT_FIELDS`) when they build Arrow columns and feed
detectors. :func:`record_problem` is the one check between the two: a value of the wrong
type, a negative or non-finite number, an integer past Int64, a map of non-strings, or a
missing non-nullable value. It is a loop of ``type()`` tests over a precomputed plan, a few
microseconds per record.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import cache
from typing import Any, Final

from driftline.schemas.event import EVENT_FIELDS, Field

__all__ = ["record_problem"]

MAX_INT: Final = 2**63 - 1
# Accepted Python types per field kind, as JSON decodes them (a float field may arrive as
# an integer: JSON does not tell 3 from 3.0). bool is not an int here.
_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "str": (str,),
    "int": (int,),
    "float": (float, int),
    "bool": (bool,),
    "ts": (int,),
    "map": (dict,),
}


@cache
def _plan(fields: tuple[Field, ...]) -> tuple[tuple[str, tuple[type, ...], bool, str], ...]:
    return tuple((f.name, _TYPES[f.kind], f.nullable, f.kind) for f in fields)


def record_problem(record: Any, fields: tuple[Field, ...] = EVENT_FIELDS) -> str | None:
    """Why ``record`` (internal form: timestamps as integer microseconds) cannot be used,
    or ``None``.

    >>> from driftline.schemas.event import from_wire
    >>> good = from_wire({"span_id": "a", "input_tokens": 12, "latency_ms": 3})
    >>> record_problem(good) is None
    True
    >>> record_problem({**good, "input_tokens": "12"})
    'input_tokens: str where int belongs'
    >>> record_problem({**good, "latency_ms": -1.0})
    'latency_ms: negative'
    >>> record_problem({**good, "validation_failed": 1})
    'validation_failed: int where bool belongs'
    >>> record_problem([1, 2])
    'not an object: list'
    """
    if not isinstance(record, Mapping):
        return f"not an object: {type(record).__name__}"
    for name, types, nullable, kind in _plan(fields):
        value = record.get(name)
        if value is None:
            if nullable:
                continue
            return f"{name}: missing"
        if type(value) not in types:
            return f"{name}: {type(value).__name__} where {kind} belongs"
        if kind in ("int", "ts") and not 0 <= value <= MAX_INT:
            return f"{name}: out of range"
        if kind == "float" and not (math.isfinite(value) and value >= 0):
            return f"{name}: {'negative' if value < 0 else 'not finite'}"
        if kind == "map" and not all(type(k) is str and type(v) is str for k, v in value.items()):
            return f"{name}: a map of strings expected"
    return None
