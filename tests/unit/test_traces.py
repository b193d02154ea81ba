"""Trace assembly: depth, arrival order, closing rules, inheritance, summaries."""

from __future__ import annotations

import copy
import dataclasses
import json
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from driftline.schemas import attributes as a
from driftline.schemas.event import EVENT_FIELD_NAMES, TRACE_FIELD_NAMES
from driftline.simulator import GroundTruth, Simulator, SimulatorConfig
from driftline.streams.normalize import normalize_message
from driftline.streams.traces import (
    CHUNK_RECORDS,
    ClosedTraces,
    TraceAssembler,
    spans_without_calls,
    tool_executions,
)
from tests.utils import otlp_factory as f

Record = dict[str, Any]
START = datetime(2026, 3, 1, tzinfo=UTC)


class TraceBuilder:
    """Spans and LLM-call events of one trace, as the normalizer emits them."""

    def __init__(self, trace_id: str = "t1", service: str = "svc") -> None:
        self.trace_id = trace_id
        self.service = service
        self.spans: list[Record] = []
        self.events: list[Record] = []
        self._clock = 0

    def span(
        self,
        span_id: str,
        parent: str = "",
        *,
        operation: str = "invoke_agent",
        is_llm_call: bool = False,
        agent: str = "",
        workflow: str = "",
        tenant: str = "",
        route: str = "",
        session_id: str = "",
        status: str = "ok",
    ) -> Record:
        self._clock += 10
        record = {
            "trace_id": self.trace_id,
            "span_id": span_id,
            "parent_span_id": parent,
            "name": span_id,
            "start_ts": 1_000_000 + self._clock,
            "end_ts": 1_000_000 + self._clock + 5,
            "operation": operation,
            "is_llm_call": is_llm_call,
            "agent": agent,
            "workflow": workflow,
            "service": self.service,
            "environment": "prod",
            "tenant": tenant,
            "route": route,
            "session_id": session_id,
            "status": status,
        }
        self.spans.append(record)
        return record

    def tool(self, span_id: str, parent: str) -> Record:
        return self.span(span_id, parent, operation="execute_tool")

    def call(
        self,
        span_id: str,
        parent: str,
        *,
        input_tokens: int = 100,
        output_tokens: int = 10,
        cost_usd: float | None = 0.001,
        retry_attempt: int = 0,
        workflow: str = "",
        tenant: str = "",
        status: str = "ok",
    ) -> Record:
        span = self.span(
            span_id,
            parent,
            operation="chat",
            is_llm_call=True,
            workflow=workflow,
            tenant=tenant,
            status=status,
        )
        event: Record = dict.fromkeys(EVENT_FIELD_NAMES, "")
        event.update(
            {k: span[k] for k in ("trace_id", "span_id", "parent_span_id", "start_ts", "end_ts")}
        )
        event.update(
            service=self.service,
            environment="prod",
            workflow=workflow,
            tenant=tenant,
            operation="chat",
            provider="openai",
            request_model="gpt-4o",
            response_model="gpt-4o",
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_read_tokens=0,
            cache_write_tokens=0,
            reasoning_tokens=0,
            cost_usd=cost_usd,
            price_source="genai-prices" if cost_usd is not None else "unknown",
            latency_ms=5.0,
            ttft_ms=None,
            queue_ms=None,
            kv_cache_usage=None,
            retry_attempt=retry_attempt,
            loop_depth=0,
            tool_calls=0,
            output_chars=None,
            validation_failed=False,
            status=status,
            attributes={},
        )
        self.events.append(event)
        return event


def assembler(**kwargs: Any) -> TraceAssembler:
    options = {"grace_s": 5.0, "timeout_s": 60.0, "max_open_traces": 1000} | kwargs
    return TraceAssembler(**options)


def flushed(*builders: TraceBuilder) -> ClosedTraces:
    asm = assembler()
    for b in builders:
        asm.add(copy.deepcopy(b.events), copy.deepcopy(b.spans), now_s=0.0)
    return asm.flush()


def depths(closed: ClosedTraces) -> dict[str, int]:
    return {e["span_id"]: e["loop_depth"] for e in closed.events}


def planner_trace() -> TraceBuilder:
    """agent -> chat; agent -> tool -> chat; agent -> tool -> sub-agent -> tool -> chat."""
    b = TraceBuilder()
    b.span("root", agent="planner")
    b.call("plan", "root", input_tokens=1000, output_tokens=100)
    b.tool("search", "root")
    b.call("summarize", "search", input_tokens=500, output_tokens=50)
    b.span("sub", "search", agent="researcher")
    b.tool("fetch", "sub")
    b.call("extract", "fetch", input_tokens=300, output_tokens=30)
    b.call("followup", "plan", input_tokens=200, output_tokens=20)  # nested under a call
    return b


def test_loop_depth_counts_calls_and_tools_on_the_path() -> None:
    closed = flushed(planner_trace())
    assert depths(closed) == {"plan": 1, "summarize": 2, "extract": 3, "followup": 2}
    (trace,) = closed.traces
    assert trace["max_loop_depth"] == 3
    assert trace["llm_call_count"] == 4
    assert trace["span_count"] == 8


def test_missing_parent_breaks_the_chain() -> None:
    b = planner_trace()
    b.spans = [s for s in b.spans if s["span_id"] != "sub"]  # never received
    closed = flushed(b)
    # extract: fetch (tool) + itself; search is beyond the gap.
    assert depths(closed)["extract"] == 2
    assert closed.traces[0]["span_count"] == 7


def test_children_before_parent_across_adds() -> None:
    b = planner_trace()
    reference = flushed(b)
    asm = assembler()
    spans = {s["span_id"]: s for s in copy.deepcopy(b.spans)}
    events = {e["span_id"]: e for e in copy.deepcopy(b.events)}
    # leaves first, root last, each in its own message
    for span_id in ["extract", "followup", "fetch", "summarize", "sub", "search", "plan", "root"]:
        event = [events[span_id]] if span_id in events else []
        asm.add(event, [spans[span_id]], now_s=1.0)
    closed = asm.flush()
    assert closed.events == reference.events
    assert closed.traces == reference.traces


def test_closes_grace_after_root_arrives_not_before() -> None:
    b = planner_trace()
    root = [s for s in b.spans if s["span_id"] == "root"]
    others = [s for s in b.spans if s["span_id"] != "root"]
    asm = assembler(grace_s=5.0)
    asm.add(b.events[:2], others[:4], now_s=10.0)
    asm.add(b.events[2:], others[4:], now_s=11.0)
    assert asm.close_due(now_s=50.0).traces == []
    asm.add([], root, now_s=50.0)
    assert asm.close_due(now_s=54.9).traces == []
    assert asm.open_count == 1
    closed = asm.close_due(now_s=55.0)
    assert [t["closed_by"] for t in closed.traces] == ["root_end"]
    assert asm.closed_trace_ids == ["t1"]
    assert asm.open_count == 0
    assert depths(closed) == depths(flushed(planner_trace()))


def test_timeout_without_root() -> None:
    b = planner_trace()
    b.spans = [s for s in b.spans if s["span_id"] != "root"]
    asm = assembler(timeout_s=60.0)
    asm.add(b.events, b.spans, now_s=100.0)
    assert asm.close_due(now_s=159.0).traces == []
    closed = asm.close_due(now_s=160.0)
    (trace,) = closed.traces
    assert trace["closed_by"] == "timeout"
    assert trace["root_span_id"] == ""
    # Without the root, calls directly under it still count themselves.
    assert depths(closed) == {"plan": 1, "summarize": 2, "extract": 3, "followup": 2}
    assert asm.closed_counts["timeout"] == 1


def test_root_arriving_late_moves_the_deadline() -> None:
    b = planner_trace()
    root = [s for s in b.spans if s["span_id"] == "root"]
    asm = assembler(grace_s=5.0, timeout_s=60.0)
    asm.add(b.events, [s for s in b.spans if s["span_id"] != "root"], now_s=0.0)
    asm.add([], root, now_s=58.0)
    assert asm.close_due(now_s=60.0).traces == []
    assert [t["closed_by"] for t in asm.close_due(now_s=63.0).traces] == ["root_end"]


def test_eviction_closes_oldest_first() -> None:
    asm = assembler(max_open_traces=2)
    for n, trace_id in enumerate(["a", "b", "c"]):
        b = TraceBuilder(trace_id)
        b.call("x", "missing-parent")
        asm.add(b.events, b.spans, now_s=float(n))
    assert asm.open_count == 2
    assert asm.evicted_count == 1
    closed = asm.close_due(now_s=3.0)
    assert [(t["trace_id"], t["closed_by"]) for t in closed.traces] == [("a", "evicted")]
    assert asm.closed_trace_ids == ["a"]
    rest = asm.flush()
    assert [(t["trace_id"], t["closed_by"]) for t in rest.traces] == [
        ("b", "flush"),
        ("c", "flush"),
    ]
    assert asm.closed_trace_ids == ["b", "c"]


def test_duplicate_spans_count_once() -> None:
    b = planner_trace()
    asm = assembler()
    asm.add(copy.deepcopy(b.events), copy.deepcopy(b.spans), now_s=0.0)
    asm.add(copy.deepcopy(b.events), copy.deepcopy(b.spans), now_s=1.0)
    closed = asm.flush()
    assert closed.traces == flushed(planner_trace()).traces
    assert len(closed.events) == 4


def test_workflow_from_nearest_ancestor() -> None:
    b = TraceBuilder()
    b.span("root", agent="planner", workflow="outer")
    b.span("inner", "root", workflow="inner-wf")
    b.call("c1", "inner")
    b.call("c2", "root")
    b.call("c3", "root", workflow="own")
    closed = flushed(b)
    assert {e["span_id"]: e["workflow"] for e in closed.events} == {
        "c1": "inner-wf",
        "c2": "outer",
        "c3": "own",
    }
    assert closed.traces[0]["workflow"] == "outer"


def test_workflow_from_any_span_then_root_agent_then_service() -> None:
    b = TraceBuilder()
    b.span("root", agent="planner")
    b.span("side", "root", workflow="tagged-elsewhere")
    b.call("c1", "root")
    assert flushed(b).events[0]["workflow"] == "tagged-elsewhere"

    b = TraceBuilder()
    b.span("root", agent="planner")
    b.call("c1", "root")
    closed = flushed(b)
    assert closed.events[0]["workflow"] == "planner"
    assert closed.traces[0]["workflow"] == "planner"

    b = TraceBuilder(service="checkout-api")
    b.call("c1", "")
    closed = flushed(b)
    assert closed.events[0]["workflow"] == "checkout-api"
    assert closed.traces[0]["workflow"] == "checkout-api"


def test_tenant_route_session_inherit_from_ancestors() -> None:
    b = TraceBuilder()
    b.span("root", tenant="acme", route="/chat", session_id="s-1")
    b.tool("t", "root")
    b.call("c1", "t")
    b.call("c2", "t", tenant="globex")
    closed = flushed(b)
    by_id = {e["span_id"]: e for e in closed.events}
    assert (by_id["c1"]["tenant"], by_id["c1"]["route"], by_id["c1"]["session_id"]) == (
        "acme",
        "/chat",
        "s-1",
    )
    assert by_id["c2"]["tenant"] == "globex"
    assert (closed.traces[0]["tenant"], closed.traces[0]["route"]) == ("acme", "/chat")


def test_summary_numbers() -> None:
    b = TraceBuilder()
    b.span("root", agent="planner")
    b.call("first", "root", input_tokens=1000, output_tokens=100, cost_usd=0.01)
    b.tool("t", "root")
    b.call("retry", "t", input_tokens=2000, output_tokens=200, cost_usd=0.02, retry_attempt=1)
    b.call("local", "t", input_tokens=700, output_tokens=0, cost_usd=None, status="error")
    closed = flushed(b)
    (trace,) = closed.traces
    assert tuple(trace) == TRACE_FIELD_NAMES
    assert trace["input_tokens"] == 3700
    assert trace["output_tokens"] == 300
    assert trace["total_tokens"] == 4000
    assert trace["cost_usd"] == pytest.approx(0.03)
    assert trace["unpriced_calls"] == 1
    assert trace["amplification"] == pytest.approx(4000 / 1100)
    assert trace["retries"] == 1
    assert trace["error_count"] == 1
    assert trace["root_span_id"] == "root"
    assert trace["start_ts"] == min(s["start_ts"] for s in b.spans)
    assert trace["end_ts"] == max(s["end_ts"] for s in b.spans)
    assert [e["span_id"] for e in closed.events] == ["first", "retry", "local"]


def test_unpriced_trace_has_no_cost_and_zero_first_call_no_amplification() -> None:
    b = TraceBuilder()
    b.span("root")
    b.call("c1", "root", input_tokens=0, output_tokens=0, cost_usd=None)
    b.call("c2", "root", input_tokens=10, output_tokens=5, cost_usd=None)
    (trace,) = flushed(b).traces
    assert trace["cost_usd"] is None
    assert trace["unpriced_calls"] == 2
    assert trace["amplification"] is None


def test_export_import_round_trip_through_json() -> None:
    b = planner_trace()
    asm = assembler()
    asm.add(copy.deepcopy(b.events[:2]), copy.deepcopy(b.spans[:3]), now_s=0.0)
    other = TraceBuilder("t2")
    other.call("x", "")
    asm.add(other.events, other.spans, now_s=0.0)
    assert asm.dirty_trace_ids() == {"t1", "t2"}
    assert asm.dirty_trace_ids() == set()

    asm.add(copy.deepcopy(b.events[2:]), copy.deepcopy(b.spans[3:]), now_s=1.0)
    assert asm.dirty_trace_ids() == {"t1"}
    state = json.loads(json.dumps(asm.export_trace("t1")))

    restored = assembler()
    restored.import_trace("t1", state)
    assert restored.open_count == 1
    # Root arrived at now_s=0.0: the deadline survives the round trip.
    assert restored.close_due(now_s=4.9).traces == []
    closed = restored.close_due(now_s=5.0)
    reference = flushed(planner_trace())
    assert closed.traces == [dict(reference.traces[0], closed_by="root_end")]
    assert closed.events == reference.events


def test_import_rejects_unknown_state_version() -> None:
    with pytest.raises(ValueError, match="version"):
        assembler().import_trace("t1", {"version": 99})


def test_constructor_range_checks() -> None:
    with pytest.raises(ValueError, match="max_open_traces"):
        TraceAssembler(grace_s=1, timeout_s=1, max_open_traces=0)
    with pytest.raises(ValueError, match="timeout_s"):
        TraceAssembler(grace_s=1, timeout_s=0, max_open_traces=10)


def random_forest_trace(draw: st.DrawFn) -> TraceBuilder:
    b = TraceBuilder()
    b.span("s0", agent="planner", workflow=draw(st.sampled_from(["", "wf"])))
    for n in range(1, draw(st.integers(min_value=2, max_value=14))):
        parent = f"s{draw(st.integers(min_value=0, max_value=n - 1))}"
        if draw(st.booleans()):
            parent = draw(st.sampled_from([parent, "never-received"]))
        kind = draw(st.sampled_from(["call", "tool", "agent"]))
        if kind == "call":
            b.call(
                f"s{n}",
                parent,
                input_tokens=draw(st.integers(0, 5000)),
                output_tokens=draw(st.integers(0, 500)),
                cost_usd=draw(st.sampled_from([None, 0.001, 0.25])),
                retry_attempt=draw(st.integers(0, 2)),
                tenant=draw(st.sampled_from(["", "acme", "globex"])),
            )
        elif kind == "tool":
            b.tool(f"s{n}", parent)
        else:
            b.span(
                f"s{n}",
                parent,
                workflow=draw(st.sampled_from(["", "wf-a", "wf-b"])),
                tenant=draw(st.sampled_from(["", "acme", "globex"])),
            )
    if draw(st.booleans()):
        b.spans = b.spans[1:]  # the root never arrived
    return b


@st.composite
def shuffled_deliveries(draw: st.DrawFn) -> tuple[TraceBuilder, list[list[str]]]:
    b = random_forest_trace(draw)
    ids = [s["span_id"] for s in b.spans]
    order = draw(st.permutations(ids))
    redelivered = draw(st.lists(st.sampled_from(ids), max_size=3))
    sequence = list(order) + redelivered
    cuts = sorted(draw(st.lists(st.integers(0, len(sequence)), max_size=4)))
    chunks = [sequence[a:b] for a, b in zip([0, *cuts], [*cuts, len(sequence)], strict=True)]
    return b, chunks


@settings(max_examples=150, deadline=None)
@given(shuffled_deliveries(), st.booleans())
def test_any_arrival_order_gives_the_same_result(
    case: tuple[TraceBuilder, list[list[str]]], call_records: bool
) -> None:
    """Also without the calls' span records, as decode sends them (spans_without_calls)."""
    b, chunks = case
    reference = flushed(b)
    spans = {s["span_id"]: s for s in b.spans}
    events = {e["span_id"]: e for e in b.events}
    asm = assembler()
    for n, chunk in enumerate(chunks):
        asm.add(
            [copy.deepcopy(events[i]) for i in chunk if i in events],
            [copy.deepcopy(spans[i]) for i in chunk if call_records or i not in events],
            now_s=float(n),
        )
    closed = asm.flush()
    assert closed.events == reference.events
    assert closed.traces == reference.traces


def test_evicted_trace_that_reopens_is_marked_dirty_again() -> None:
    asm = assembler(max_open_traces=1)
    first = TraceBuilder("a")
    first.call("x", "")
    asm.add(first.events, first.spans, now_s=0.0)
    second = TraceBuilder("b")
    second.call("y", "")
    asm.add(second.events, second.spans, now_s=1.0)  # evicts "a"
    late = TraceBuilder("a")
    late.call("z", "x")
    asm.add(late.events, late.spans, now_s=2.0)  # "a" again: evicts "b"
    assert asm.dirty_trace_ids() == {"a"}
    closed = asm.close_due(now_s=3.0)
    assert [(t["trace_id"], t["closed_by"]) for t in closed.traces] == [
        ("a", "evicted"),
        ("b", "evicted"),
    ]
    # A checkpointing caller deletes closed ids, then rewrites the reopened "a".
    assert asm.closed_trace_ids == ["a", "b"]
    assert asm.dirty_trace_ids() == {"a"}
    assert asm.export_trace("a")["events"][0]["span_id"] == "z"


# --- tool_calls: the tool executions a call led to -----------------------------------------


def agent_turn() -> TraceBuilder:
    """pydantic-ai's shape: chat and execute_tool spans side by side under invoke_agent."""
    b = TraceBuilder()
    b.span("agent", agent="planner")
    b.call("ask", "agent")  # asks for two tools
    b.tool("get_a", "agent")
    b.tool("get_b", "agent")
    b.call("answer", "agent")
    return b


def tool_calls(closed: ClosedTraces) -> dict[str, int]:
    return {e["span_id"]: e["tool_calls"] for e in closed.events}


def test_tools_count_for_the_sibling_call_that_started_last_before_them() -> None:
    assert tool_calls(flushed(agent_turn())) == {"ask": 2, "answer": 0}


def test_retries_tools_and_nested_calls_of_a_planner_loop() -> None:
    b = TraceBuilder()
    b.span("agent", agent="planner")
    b.call("try1", "agent", status="error")
    b.call("try2", "agent", retry_attempt=1)  # the attempt that answered asks for the tools
    b.tool("search", "agent")
    b.call("summarize", "search")  # a call inside a tool asks for nothing here
    b.tool("calc", "agent")  # so calc is still try2's, not summarize's
    b.call("final", "agent")
    assert tool_calls(flushed(b)) == {
        "try1": 0,
        "try2": 2,
        "summarize": 0,
        "final": 0,
    }


def test_a_tool_after_a_call_that_failed_for_good_is_no_call_s() -> None:
    b = TraceBuilder()
    b.span("agent", agent="researcher")
    b.call("ok", "agent")
    b.tool("asked", "agent")
    b.call("try1", "agent", status="error")
    b.call("try2", "agent", status="error", retry_attempt=1)
    b.tool("ran_anyway", "agent")  # not ok's: the calls after it did not answer
    assert tool_calls(flushed(b)) == {"ok": 1, "try1": 0, "try2": 0}


def test_a_tool_nested_under_its_call_or_a_wrapper_counts_for_that_call() -> None:
    b = TraceBuilder()
    b.span("agent", agent="planner")
    b.call("ask", "agent")
    b.tool("inside", "ask")  # nested under the chat span that asked for it
    b.span("running tools", "agent", operation="")  # a wrapper without an operation
    b.tool("wrapped", "running tools")
    assert tool_calls(flushed(b)) == {"ask": 2}


def test_tools_before_any_call_beyond_an_agent_or_a_gap_count_for_no_call() -> None:
    b = TraceBuilder()
    b.span("root", agent="planner")
    b.tool("early", "root")  # the agent's own first step
    b.call("ask", "root")
    b.span("sub", "root", agent="researcher")  # a sub-agent handed over to
    b.tool("sub_tool", "sub")  # the sub-agent made no call yet: stops at the agent
    b.tool("orphan", "never-received")
    closed = flushed(b)
    assert tool_calls(closed) == {"ask": 0}


def test_embeddings_calls_own_no_tools() -> None:
    b = agent_turn()
    embed = b.call("embed", "agent")
    embed["operation"] = "embeddings"
    b.spans[-1]["operation"] = "embeddings"
    b.tool("late", "agent")  # after the embeddings call: still the answer's
    assert tool_calls(flushed(b)) == {"ask": 2, "answer": 1, "embed": 0}


def test_an_explicit_tool_calls_attribute_wins() -> None:
    b = agent_turn()
    b.events[0]["tool_calls"] = 5  # driftline.tool_calls on the span
    b.events[1]["tool_calls"] = 1
    assert tool_calls(flushed(b)) == {"ask": 5, "answer": 1}


def test_tool_calls_are_the_same_in_any_arrival_order() -> None:
    b = agent_turn()
    reference = tool_calls(flushed(b))
    asm = assembler()
    for span in reversed(copy.deepcopy(b.spans)):
        events = [e for e in copy.deepcopy(b.events) if e["span_id"] == span["span_id"]]
        asm.add(events, [span], now_s=0.0)
    assert tool_calls(asm.flush()) == reference


def test_the_rule_gives_the_simulator_s_own_tool_counts() -> None:
    """agent-planner writes each call's driftline.tool_calls (its ground truth) and runs the
    tools as execute_tool spans, with retries, tools that call a model and a sub-agent:
    counted from the spans alone, every call gets the number it wrote."""
    config = SimulatorConfig(rate=10, duration_s=60, seed=5, clock="simulated", start=START)
    config = dataclasses.replace(config, workflows=("agent-planner",))
    memory = InMemorySpanExporter()
    Simulator(config).run([memory], GroundTruth())
    batch = normalize_message(encode_spans(memory.get_finished_spans()).SerializeToString())
    assert batch.rejects == []
    spans: dict[str, dict[str, dict[str, Any]]] = {}
    for record in batch.spans:
        spans.setdefault(record["trace_id"], {})[record["span_id"]] = record
    calls: dict[str, list[dict[str, Any]]] = {}
    for event in sorted(batch.events, key=lambda e: (e["start_ts"], e["span_id"])):
        calls.setdefault(event["trace_id"], []).append(event)
    written = Counter()
    for trace_id, trace_calls in calls.items():
        counted = tool_executions(spans[trace_id], trace_calls)
        for call in trace_calls:
            assert counted.get(call["span_id"], 0) == call["tool_calls"], call["span_id"]
            written[call["tool_calls"]] += 1
    tools = sum(r["operation"] == "execute_tool" for r in batch.spans)
    assert tools == sum(n * k for n, k in written.items()) > 100
    assert {1, 2} <= set(written)


@pytest.mark.parametrize(
    ("kind_key", "agent", "llm", "tool"),
    [
        (a.GEN_AI_OPERATION_NAME, "invoke_agent", f.semconv_chat_attributes(), "execute_tool"),
        (a.OPENINFERENCE_SPAN_KIND, "AGENT", f.openinference_llm_attributes(), "TOOL"),
        (a.TRACELOOP_SPAN_KIND, "agent", f.openllmetry_attributes(), "tool"),
    ],
)
def test_tool_spans_of_each_convention_count_from_otlp(
    kind_key: str, agent: str, llm: dict[str, Any], tool: str
) -> None:
    """OTLP spans -> normalizer -> assembly: GenAI, OpenInference and OpenLLMetry tools."""
    trace_id = bytes(range(1, 17))
    ms = 1_000_000

    def make(number: int, parent: int, start_ms: int, attributes: dict[str, Any]) -> Any:
        return f.make_span(
            trace_id=trace_id,
            span_id=number.to_bytes(8, "big"),
            parent_span_id=parent.to_bytes(8, "big") if parent else b"",
            start_ns=f.BASE_TIME_NS + start_ms * ms,
            end_ns=f.BASE_TIME_NS + (start_ms + 5) * ms,
            attributes=attributes,
        )

    spans = [
        make(1, 0, 0, {kind_key: agent}),
        make(2, 1, 1, llm),
        make(3, 1, 7, {kind_key: tool}),
        make(4, 1, 8, {kind_key: tool}),
        make(5, 1, 20, llm),
    ]
    batch = normalize_message(f.traces_data(f.make_resource_spans(spans)).SerializeToString())
    asm = assembler()
    asm.add(batch.events, batch.spans, now_s=0.0)
    closed = asm.flush()
    assert [e["tool_calls"] for e in closed.events] == [2, 0]


# -- checkpoints in bounded records, and the span cap ---------------------------------


def big_trace(calls: int, trace_id: str = "big") -> TraceBuilder:
    """An agent root, and under it ``calls`` LLM calls each with one tool execution."""
    b = TraceBuilder(trace_id)
    b.span("root", agent="planner", workflow="wf")
    for n in range(calls):
        b.call(f"c{n}", "root")
        b.tool(f"t{n}", f"c{n}")
    return b


def closed_at_root(b: TraceBuilder) -> ClosedTraces:
    reference = flushed(b)
    return ClosedTraces(reference.events, [dict(t, closed_by="root_end") for t in reference.traces])


class Table:
    """What a changelog-backed table holds after checkpoint writes (None deletes)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, int | None], Record] = {}
        self.written_bytes: list[int] = []

    def save(self, asm: TraceAssembler) -> None:
        for trace_id in sorted(asm.dirty_trace_ids()):
            head, chunks = asm.checkpoint_changes(trace_id)
            for index, chunk in chunks:
                self.rows[(trace_id, index)] = json.loads(json.dumps(chunk))
            self.rows[(trace_id, None)] = json.loads(json.dumps(head))
            self.written_bytes.append(
                sum(len(json.dumps(v)) for v in [head, *(c for _, c in chunks)])
            )

    def delete_closed(self, asm: TraceAssembler) -> None:
        for trace_id in asm.closed_trace_ids:
            self.rows.pop((trace_id, None), None)
            for index in range(asm.closed_chunks.get(trace_id, 0)):
                del self.rows[(trace_id, index)]

    def restore(self, asm: TraceAssembler) -> None:
        for (trace_id, index), head in self.rows.items():
            if index is None:
                parts = {i: c for (t, i), c in self.rows.items() if t == trace_id and i is not None}
                asm.import_trace(trace_id, head, [parts[i] for i in sorted(parts)])


def test_a_large_trace_is_checkpointed_in_bounded_records_and_restored_whole() -> None:
    b = big_trace(1_500)  # 3,001 spans and 1,500 calls: far over one chunk
    asm, table = assembler(), Table()
    for start in range(0, len(b.spans), 100):  # arrives in 46 batches
        calls = [
            e
            for e in b.events
            if e["span_id"] in {s["span_id"] for s in b.spans[start : start + 100]}
        ]
        asm.add(copy.deepcopy(calls), copy.deepcopy(b.spans[start : start + 100]), now_s=0.0)
        table.save(asm)
    # Each write is the head plus any chunk just filled: bounded, not the whole trace.
    whole = len(json.dumps(asm.export_trace("big")))
    assert max(table.written_bytes) < whole / 5, (max(table.written_bytes), whole)
    assert sum(table.written_bytes) < 3 * whole
    assert len([k for k in table.rows if k[1] is not None]) >= 8

    restored = assembler()
    table.restore(restored)
    assert restored.export_trace("big") == json.loads(json.dumps(asm.export_trace("big")))
    assert restored.close_due(now_s=10.0) == closed_at_root(big_trace(1_500))
    table.delete_closed(restored)
    assert table.rows == {}


def test_a_restored_trace_goes_on_growing_in_chunks() -> None:
    b = big_trace(400)
    first, table = assembler(), Table()
    first.add(copy.deepcopy(b.events[:300]), copy.deepcopy(b.spans[:601]), now_s=0.0)
    table.save(first)
    second = assembler()
    table.restore(second)
    assert second.dirty_trace_ids() == set()  # restored as saved: nothing to write again
    second.add(copy.deepcopy(b.events[300:]), copy.deepcopy(b.spans[601:]), now_s=1.0)
    table.save(second)
    third = assembler()
    table.restore(third)
    assert third.close_due(now_s=10.0) == closed_at_root(big_trace(400))


def test_a_trace_saved_as_one_value_by_the_previous_release_is_restored() -> None:
    b = big_trace(300)
    old = assembler()
    old.add(copy.deepcopy(b.events), copy.deepcopy(b.spans), now_s=0.0)
    inline = json.loads(json.dumps(old.export_trace("big")))
    assert inline["version"] == 1
    restored, table = assembler(), Table()
    restored.import_trace("big", inline)
    table.save(restored)  # too large for one record now: written again in chunks
    assert {index for _, index in table.rows} == {None, *range(901 // CHUNK_RECORDS)}
    assert restored.close_due(now_s=10.0) == closed_at_root(big_trace(300))


def test_a_trace_at_the_span_cap_closes_with_every_call_and_later_spans_open_it_again() -> None:
    b = big_trace(1_000)  # 2,001 spans, 1,000 of them calls
    asm, table = assembler(max_trace_spans=1_200), Table()
    # As decode sends them: the calls' events stand for their spans.
    asm.add(copy.deepcopy(b.events), spans_without_calls(b.events, b.spans), now_s=0.0)
    table.save(asm)
    closed = asm.close_due(now_s=0.0)
    assert [t["closed_by"] for t in closed.traces] == ["span_cap"]
    assert closed.traces[0]["span_count"] == 1_200
    assert asm.closed_counts["span_cap"] == 1
    assert asm.closed_trace_ids == ["big"]
    # The spans after the cap are a trace of their own under the same id, and every call
    # was published once, in one part or the other.
    rest = asm.close_due(now_s=100.0)
    assert [t["closed_by"] for t in rest.traces] == ["timeout"]
    calls = [e["span_id"] for e in closed.events + rest.events]
    assert sorted(calls) == sorted(e["span_id"] for e in b.events)


def test_closing_deletes_every_chunk_a_trace_saved() -> None:
    asm, table = assembler(max_open_traces=1), Table()
    big = big_trace(700, "a")
    asm.add(copy.deepcopy(big.events), copy.deepcopy(big.spans), now_s=0.0)
    table.save(asm)
    assert len(table.rows) == 1 + 2_101 // CHUNK_RECORDS  # head and full chunks
    other = TraceBuilder("b")
    other.call("x", "")
    asm.add(other.events, other.spans, now_s=1.0)  # evicts "a"
    asm.close_due(now_s=1.0)
    table.delete_closed(asm)
    table.save(asm)
    assert set(table.rows) == {("b", None)}


def test_a_call_sent_without_its_span_record_stands_for_it() -> None:
    """Decode sends no span record for a call: its event stands for its span, as the root
    (the trace closes at the grace, not the timeout) and in every count."""
    b = TraceBuilder("solo")
    b.call("only", "")  # a bare chat completion: the call is the root
    asm = assembler()
    asm.add(copy.deepcopy(b.events), spans_without_calls(b.events, b.spans), now_s=0.0)
    assert asm.close_due(now_s=4.9) == ClosedTraces()  # the grace is 5 s, the timeout 60
    closed = asm.close_due(now_s=5.0)
    assert closed == closed_at_root(b)
    assert closed.traces[0]["span_count"] == 1


def test_realistic_traffic_assembles_alike_without_the_calls_span_records() -> None:
    from driftline.streams.normalize import normalize_message

    for seed in range(5):
        batch = normalize_message(f.realistic_message(600, seed=seed).SerializeToString())
        with_records, without = assembler(), assembler()
        with_records.add(copy.deepcopy(batch.events), copy.deepcopy(batch.spans), now_s=0.0)
        without.add(
            copy.deepcopy(batch.events), spans_without_calls(batch.events, batch.spans), 0.0
        )
        assert len(spans_without_calls(batch.events, batch.spans)) < len(batch.spans)
        assert without.flush() == with_records.flush()
