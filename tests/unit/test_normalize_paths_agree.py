"""The normalizer's fast path gives what its exact path gives, on any span.

``streams/normalize.py`` maps a span twice: the fast path (plans per key set, memos of the
low-cardinality values) runs first and hands the span to the exact path at the first doubt.
Here hypothesis draws spans from every key the mapping reads (and a few it does not), with
values of every type and hostile text, and the whole batch (events, span records, rejects
with their payloads, tokenless counts) must be the same with the fast path and without it,
cold and with the fast path's caches warm.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftline.schemas import attributes as a
from driftline.streams import normalize as normalize_module
from driftline.streams.normalize import NormalizedBatch, normalize_message
from tests.utils import otlp_factory as f

TRACE_ID = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")
# Keys the event keeps as they come (free attributes), and one it drops.
FREE_KEYS = ["gen_ai.request.temperature", "gen_ai.response.id", "server.address", "app.note"]
KEYS = [*sorted(a.MAPPED_KEYS), *FREE_KEYS]
SCOPES = ["driftline.tests", "openinference.instrumentation.openai", "logfire.openai", "x"]
TEXT = st.sampled_from(
    [
        *("chat", "gpt-4o", "openai", "LLM", "stop", "", "12", "1.5", "a'b", "x" * 600),
        *("wf\x1b[2J", "r\u202eo", "n\x00l", "u:p@h:1"),
    ]
) | st.text(max_size=12)
VALUES = st.one_of(
    TEXT,
    st.integers(-3, 10**9),
    st.sampled_from([0, 1, 2**62, -(2**63)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.lists(TEXT, max_size=3),
)
# Calls as instrumentations send them, then changed: keys added, overwritten or dropped.
CALLS = st.sampled_from(
    [
        f.semconv_chat_attributes,
        f.deprecated_semconv_attributes,
        f.openinference_llm_attributes,
        f.openllmetry_attributes,
        f.vllm_request_attributes,
        lambda: {**f.semconv_chat_attributes(), **f.driftline_attributes()},
        dict,
    ]
)


@st.composite
def attributes(draw: st.DrawFn) -> dict[str, Any]:
    call = dict(draw(CALLS)())
    for key in draw(st.lists(st.sampled_from(sorted(call) or KEYS), max_size=2)):
        call.pop(key, None)
    call.update(draw(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=3)))
    call.update(draw(st.dictionaries(st.sampled_from(FREE_KEYS), VALUES, max_size=2)))
    return call


SPAN = st.fixed_dictionaries(
    {
        "attributes": attributes(),
        "name": TEXT,
        "status_code": st.sampled_from([f.STATUS_UNSET, f.STATUS_OK, f.STATUS_ERROR]),
        "duration_ms": st.sampled_from([0, 1, 250, 2 * 86_400_000]),
    }
)


def message(spans: list[dict[str, Any]], scope: str, resource: dict[str, Any]) -> bytes:
    built = [
        f.make_span(
            trace_id=TRACE_ID,
            span_id=number.to_bytes(8, "big"),
            name=drawn["name"],
            start_ns=f.BASE_TIME_NS,
            end_ns=f.BASE_TIME_NS + drawn["duration_ms"] * 1_000_000,
            attributes=drawn["attributes"],
            status_code=drawn["status_code"],
        )
        for number, drawn in enumerate(spans, start=1)
    ]
    data = f.traces_data(
        f.make_resource_spans(built, resource_attributes=resource, scope_name=scope)
    )
    return data.SerializeToString()


def as_compared(batch: NormalizedBatch) -> tuple[Any, ...]:
    rejects = [(r.reason, r.detail, r.trace_id, r.span_id, r.payload) for r in batch.rejects]
    return batch.events, batch.spans, rejects, batch.span_count, batch.tokenless


def _doubt(*args: Any) -> bool:
    raise RuntimeError("the exact path decides")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    spans=st.lists(SPAN, min_size=1, max_size=4),
    scope=st.sampled_from(SCOPES),
    resource=st.dictionaries(
        st.sampled_from([a.SERVICE_NAME, "deployment.environment.name", a.DRIFTLINE_TENANT]),
        TEXT,
        max_size=3,
    ),
)
def test_the_fast_path_gives_what_the_exact_path_gives(
    spans: list[dict[str, Any]], scope: str, resource: dict[str, Any]
) -> None:
    payload = message(spans, scope, resource)
    fast_cold = as_compared(normalize_message(payload))
    fast_warm = as_compared(normalize_message(payload))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(normalize_module, "_normalize_span_fast", _doubt)
        exact = as_compared(normalize_message(payload))
    assert fast_cold == exact
    assert fast_warm == exact
