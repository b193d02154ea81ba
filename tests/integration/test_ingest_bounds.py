"""The worker judges span times against the message's arrival and stores no content.

One message through the embedded stack: a fresh span with prompt content and a hostile
workflow name, a span eight days old and one two hours ahead. The old and the future span go
to the dead-letter topic with their reasons and without content; the fresh one comes out as an
event without the content and with its workflow name made safe.
"""

from __future__ import annotations

import time
import uuid

import pytest

from driftline.schemas import attributes as a
from driftline.stack import EmbeddedStack
from driftline.streams import topics
from driftline.streams.normalize import safe_name
from tests.integration.conftest import Kafka
from tests.integration.test_ingest import closed_records, wait_for_trace
from tests.utils import otlp_factory as f

pytestmark = pytest.mark.integration

DAY_NS = 86_400 * 10**9
SECRET = "prompt text that must not be stored"
WORKFLOW = "zz\\' ) OR 1=1 --"


def test_times_outside_the_window_are_dead_lettered_and_content_is_not_kept(
    stack: EmbeddedStack, kafka: Kafka
) -> None:
    dlq = kafka.reader(topics.OTLP_SPANS_DLQ)
    events_reader = kafka.reader(topics.LLM_EVENTS)
    trace = uuid.uuid4().bytes
    fresh, stale, ahead = (uuid.uuid4().bytes[:8] for _ in range(3))
    now = time.time_ns()
    attributes = {
        **f.semconv_chat_attributes(input_tokens=10, output_tokens=5),
        a.DRIFTLINE_WORKFLOW: WORKFLOW,
        "llm.completions.0.content": SECRET,
    }
    message = f.traces_data(
        f.make_resource_spans(
            [
                f.make_span(trace_id=trace, span_id=fresh, start_ns=now, attributes=attributes),
                f.make_span(
                    trace_id=trace,
                    span_id=stale,
                    parent_span_id=fresh,
                    start_ns=now - 8 * DAY_NS,
                    attributes=attributes,
                ),
                f.make_span(
                    trace_id=trace,
                    span_id=ahead,
                    parent_span_id=fresh,
                    start_ns=now + DAY_NS // 12,
                    attributes=attributes,
                ),
            ]
        )
    )
    kafka.produce(topics.OTLP_SPANS, message.SerializeToString(), partition=1)

    dlq.wait_for(lambda rs: sum(trace in r.value for r in rs) >= 2, timeout_s=30)
    dead = [r for r in dlq.records if trace in r.value]
    assert sorted(r.headers[topics.HEADER_REASON] for r in dead) == [
        b"future_timestamp",
        b"stale_timestamp",
    ]
    assert all(SECRET.encode() not in r.value for r in dead)

    wait_for_trace(events_reader, trace.hex())
    events, _ = closed_records(events_reader.records, trace.hex())
    (event,) = events
    assert event["span_id"] == fresh.hex()
    assert event["workflow"] == safe_name(WORKFLOW, "workflow", {})
    assert event["attributes"][f"{a.ORIGINAL_NAME_PREFIX}workflow"] == WORKFLOW
    assert SECRET not in str(event)
