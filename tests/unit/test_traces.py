"""Trace assembly: depth, arrival order, closing rules, inheritance, summaries."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.schemas.event import EVENT_FIELD_NAMES, TRACE_FIELD_NAMES
from driftline.streams.traces import ClosedTraces, TraceAssembler

Record = dict[str, Any]


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
@given(shuffled_deliveries())
def test_any_arrival_order_gives_the_same_result(
    case: tuple[TraceBuilder, list[list[str]]],
) -> None:
    b, chunks = case
    reference = flushed(b)
    spans = {s["span_id"]: s for s in b.spans}
    events = {e["span_id"]: e for e in b.events}
    asm = assembler()
    for n, chunk in enumerate(chunks):
        asm.add(
            [copy.deepcopy(events[i]) for i in chunk if i in events],
            [copy.deepcopy(spans[i]) for i in chunk],
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
