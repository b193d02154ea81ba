"""Hostile ``llm_events`` messages through ``decode_closed`` (the store's and monitor's reader).

Anyone who can write the topic can send anything: bytes that are not JSON, JSON that is not
the message layout, and, the hard case, records of the right shape whose values have the
wrong types, signs or sizes. ``decode_closed`` never raises; every record it hands on passes
``record_problem`` (so the store's Arrow columns and the detectors get the types their fields
promise); a record left out is named in ``problem``; and a record that was fine is never
left out.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from driftline.schemas.checks import record_problem
from driftline.schemas.event import EVENT_FIELDS, TRACE_FIELDS, from_wire, to_wire
from driftline.streams.stages import decode_closed
from tests.fuzz.profiles import fuzz_settings

pytestmark = pytest.mark.fuzz

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
ANY_JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def wire_record(draw: st.DrawFn, fields: tuple[Any, ...]) -> dict[str, Any]:
    """A record of the right shape: most values right, some replaced by anything."""
    good = to_wire(from_wire({"span_id": draw(st.text(max_size=8))}, fields), fields)
    for field in fields:
        if draw(st.integers(0, 9)) == 0:
            good[field.name] = draw(ANY_JSON)
    return good


def message() -> st.SearchStrategy[bytes]:
    layout = st.fixed_dictionaries(
        {
            "events": st.lists(wire_record(EVENT_FIELDS), max_size=4),
            "early": st.lists(st.booleans(), max_size=4) | ANY_JSON,
            "traces": st.lists(wire_record(TRACE_FIELDS), max_size=2),
        }
    )
    # The standard library writes integers past 64 bits, which orjson would refuse to.
    return (
        layout.map(lambda v: json.dumps(v).encode())
        | ANY_JSON.map(lambda v: json.dumps(v).encode())
        | st.binary(max_size=64)
    )


@fuzz_settings(share=3.0)
@given(value=message())
def test_decode_closed_never_raises_and_hands_on_only_well_typed_records(value: bytes) -> None:
    decoded = decode_closed(value)
    for record in decoded.events + decoded.late + decoded.requests:
        assert record_problem(record, EVENT_FIELDS) is None
    for record in decoded.traces:
        assert record_problem(record, TRACE_FIELDS) is None
    try:
        doc = orjson.loads(value)
    except ValueError:
        assert decoded.problem == "not JSON" and decoded.empty
        return
    if not isinstance(doc, dict):
        assert decoded.problem and decoded.empty
        return
    sent = doc.get("events") if isinstance(doc.get("events"), list) else []
    # Nothing that was fine is lost: a record left out is one the problem names.
    assert (
        len(decoded.events) + decoded.problem.count("events[") >= len(sent)
        or len(decoded.problem) >= 1000
    )
