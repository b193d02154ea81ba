"""A trace of 40,001 spans through the real broker and worker, with a kill -9 halfway.

Agentic workloads send traces of tens of thousands of spans. An open trace is checkpointed
to the ``open_traces`` changelog; one record per trace outgrew a Kafka message at about
7,000 spans (the assemble agent crashed) and was rewritten whole on every batch. Now a
trace is a head and chunks of at most 64 spans and calls, each written once.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import pytest

from driftline.config import load_settings
from driftline.schemas import attributes as a
from driftline.stack import EmbeddedStack
from driftline.streams import topics
from driftline.streams.app import OPEN_TRACES_TABLE
from driftline.streams.positions import CHUNK_KEY_PREFIX
from tests.integration.conftest import TRACE_TIMEOUT_S, Kafka, write_config
from tests.integration.test_ingest import closed_records, wait_for_trace
from tests.utils import otlp_factory as f

pytestmark = pytest.mark.integration

CHILDREN = 40_000
PER_MESSAGE = 1_000
CALL_EVERY = 10  # every tenth child is an LLM call: 4,000 calls


def giant_trace(trace: bytes, root: bytes, workflow: str) -> list[bytes]:
    """OTLP messages of one trace: 40 of 1,000 children, then the root (it ends last)."""
    base = time.time_ns()
    chat = f.semconv_chat_attributes(input_tokens=10, output_tokens=5)
    messages = []
    for first in range(0, CHILDREN, PER_MESSAGE):
        spans = [
            f.make_span(
                trace_id=trace,
                span_id=(i + 1).to_bytes(8, "big"),
                parent_span_id=root,
                name="chat" if i % CALL_EVERY == 0 else "step",
                start_ns=base + i,
                end_ns=base + i + 1_000,
                attributes=chat if i % CALL_EVERY == 0 else {"step.index": i},
            )
            for i in range(first, first + PER_MESSAGE)
        ]
        messages.append(f.traces_data(f.make_resource_spans(spans)).SerializeToString())
    agent = {a.GEN_AI_OPERATION_NAME: a.OP_INVOKE_AGENT, a.DRIFTLINE_WORKFLOW: workflow}
    root_span = f.make_span(
        trace_id=trace,
        span_id=root,
        name="agent",
        start_ns=base,
        end_ns=base + CHILDREN + 2_000,
        attributes=agent,
    )
    messages.append(f.traces_data(f.make_resource_spans([root_span])).SerializeToString())
    return messages


def test_a_trace_of_forty_thousand_spans_survives_a_kill_and_closes_whole(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, f"giant-{uuid.uuid4().hex[:8]}")
    # The trace must not time out while it is sent and while the worker is down.
    config.write_text(
        config.read_text().replace(
            f"trace_timeout_s = {TRACE_TIMEOUT_S}", "trace_timeout_s = 300.0"
        )
    )
    settings = load_settings(config)
    trace, root = uuid.uuid4().bytes, uuid.uuid4().bytes[:8]
    workflow = f"giant-{uuid.uuid4().hex[:6]}"
    messages = giant_trace(trace, root, workflow)
    changelog_topic = f"{settings.kafka.consumer_group}-{OPEN_TRACES_TABLE}-changelog"
    with EmbeddedStack(settings, config_file=config) as stack:
        assert stack.endpoints is not None and stack.worker is not None
        kafka = Kafka(settings, stack.endpoints.bootstrap_servers)
        events_reader = kafka.reader(topics.LLM_EVENTS)
        changelog = kafka.reader(changelog_topic)
        half = len(messages) // 2
        for value in messages[:half]:
            kafka.produce(topics.OTLP_SPANS, value, partition=0)

        def chunks_written(records: list) -> int:
            return sum(1 for r in records if (r.key or b"").startswith(CHUNK_KEY_PREFIX.encode()))

        # Half the trace checkpointed in chunks (20,000 spans and 2,000 calls: 343 full
        # chunks), then past an offset commit, so the restart must rebuild it from them.
        changelog.wait_for(lambda rs: chunks_written(rs) >= 300, timeout_s=120)
        time.sleep(3.5)
        os.kill(stack.worker.pid or 0, signal.SIGKILL)
        stack.restart_worker()
        for value in messages[half:]:
            kafka.produce(topics.OTLP_SPANS, value, partition=0)

        wait_for_trace(events_reader, trace.hex(), timeout_s=240)
        events_reader.drain(quiet_s=3.0)
        events, traces = closed_records(events_reader.records, trace.hex())
        changelog.drain(quiet_s=2.0)
        assert stack.worker.is_running()
        kafka.close()

    (summary,) = traces
    assert summary["span_count"] == CHILDREN + 1
    assert summary["llm_call_count"] == CHILDREN // CALL_EVERY
    assert summary["closed_by"] == "root_end"
    calls = [e["span_id"] for e in events]
    assert len(calls) == len(set(calls)) == CHILDREN // CALL_EVERY
    assert {e["workflow"] for e in events} == {workflow}
    # No checkpoint record near a message's limit; the closed trace's chunks were deleted.
    sizes = [len(r.value or b"") for r in changelog.records]
    biggest = max(changelog.records, key=lambda r: len(r.value or b""))
    assert max(sizes) < 256_000, (max(sizes), biggest.key, (biggest.value or b"")[:300])
    latest: dict[bytes, int] = {}
    for record in changelog.records:
        if record.key and (
            record.key == trace.hex().encode() or CHUNK_KEY_PREFIX.encode() in record.key
        ):
            latest[record.key] = len(record.value or b"")
    assert latest and not any(latest.values()), "a chunk of the closed trace was left behind"
    print(
        f"\n{len(changelog.records)} changelog records, largest {max(sizes) / 1000:.0f} KB, "
        f"{sum(sizes) / 1e6:.1f} MB in all"
    )
