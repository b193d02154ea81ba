"""A record the store can never keep reaches the dead-letter topic; the rest is stored.

The ingest window is widened to a year and the store's TTL set to 30 days, so a call dated 40
days back passes the normalizer and is set aside by the sink (its row would be dropped by the
TTL at once). The worker sends it to ``otlp_spans_dlq`` with reason ``store_rejected``, its
ids and its source position, without content, and goes on storing the fresh call.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from driftline.config import load_settings
from driftline.schemas import attributes as a
from driftline.stack import EmbeddedStack
from driftline.streams import topics
from tests.integration.conftest import Kafka, write_config
from tests.utils import otlp_factory as f

pytestmark = pytest.mark.integration

DAY_NS = 86_400 * 10**9


def test_a_row_the_store_cannot_keep_is_dead_lettered_with_its_position(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"store-dlq-{uuid.uuid4().hex[:8]}")
    config.write_text(
        config.read_text() + "\n[ingest]\nmax_past_s = 31536000.0\n\n[store]\nttl_days = 30\n"
    )
    settings = load_settings(config)
    trace_old, trace_new = uuid.uuid4().bytes, uuid.uuid4().bytes
    old_span, new_span = uuid.uuid4().bytes[:8], uuid.uuid4().bytes[:8]
    attributes = {
        **f.semconv_chat_attributes(input_tokens=10, output_tokens=5),
        a.DRIFTLINE_WORKFLOW: "dlq-test",
        "llm.completions.0.content": "answer text",
    }
    now = time.time_ns()
    message = f.traces_data(
        f.make_resource_spans(
            [
                f.make_span(
                    trace_id=trace_old,
                    span_id=old_span,
                    start_ns=now - 40 * DAY_NS,
                    attributes=attributes,
                ),
                f.make_span(
                    trace_id=trace_new, span_id=new_span, start_ns=now, attributes=attributes
                ),
            ]
        )
    )
    with EmbeddedStack(settings, config_file=config) as stack:
        assert stack.endpoints is not None
        kafka = Kafka(settings, stack.endpoints.bootstrap_servers)
        dlq = kafka.reader(topics.OTLP_SPANS_DLQ)
        events = kafka.reader(topics.LLM_EVENTS)
        kafka.produce(topics.OTLP_SPANS, message.SerializeToString(), partition=0)
        dlq.wait_for(
            lambda rs: any(r.headers.get(topics.HEADER_REASON) == b"store_rejected" for r in rs),
            timeout_s=60,
        )
        dlq.drain(quiet_s=3)
        dead = [r for r in dlq.records if r.headers[topics.HEADER_REASON] == b"store_rejected"]
        details = [json.loads(r.headers[topics.HEADER_DETAIL]) for r in dead]
        # the old call and the summary of its trace; nothing of the fresh one
        assert sorted((d["kind"], d["ids"]["trace_id"]) for d in details) == [
            ("events", trace_old.hex()),
            ("traces", trace_old.hex()),
        ], details
        (event_detail,) = [d for d in details if d["kind"] == "events"]
        assert event_detail["ids"]["span_id"] == old_span.hex() and event_detail["reason"]
        for record in dead:
            assert (
                record.value == b"" and b"answer text" not in record.headers[topics.HEADER_DETAIL]
            )
            # the position names the llm_events record it came from
            assert record.headers[topics.HEADER_SOURCE_TOPIC] == topics.LLM_EVENTS.encode()
            assert int(record.headers[topics.HEADER_SOURCE_OFFSET]) >= 0
        # the fresh call went on to llm_events (and so to the store) as usual
        events.wait_for(lambda rs: any(new_span.hex().encode() in r.value for r in rs))
        kafka.close()
