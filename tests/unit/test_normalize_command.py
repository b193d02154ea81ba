"""``driftline normalize FILE`` and the offline pipeline, end to end on real OTLP bytes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from driftline.cli import main
from driftline.schemas import attributes as a
from driftline.schemas.event import EVENT_FIELD_NAMES, TRACE_FIELD_NAMES, iso_to_micros
from driftline.streams.pipeline import OfflinePipeline, split_otlp_file

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # tests.utils is a package of the repository root
    sys.path.insert(0, str(REPO))

from tests.utils.otlp_factory import (  # noqa: E402
    BASE_TIME_NS,
    STATUS_ERROR,
    export_request,
    make_resource_spans,
    make_span,
    semconv_chat_attributes,
    to_otlp_json,
    traces_data,
    vllm_request_attributes,
)

TRACE_A = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
TRACE_B = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")
SECOND_NS = 1_000_000_000


def sid(n: int) -> bytes:
    return n.to_bytes(8, "big")


def agent_trace() -> list[Any]:
    """planner agent -> chat; agent -> search tool -> chat (with a retry, an error)."""
    t0 = BASE_TIME_NS
    return [
        make_span(
            trace_id=TRACE_A,
            span_id=sid(1),
            name="invoke_agent planner",
            start_ns=t0,
            end_ns=t0 + 10 * SECOND_NS,
            attributes={a.GEN_AI_OPERATION_NAME: a.OP_INVOKE_AGENT, a.GEN_AI_AGENT_NAME: "planner"},
        ),
        make_span(
            trace_id=TRACE_A,
            span_id=sid(2),
            parent_span_id=sid(1),
            name="chat gpt-4o",
            start_ns=t0 + 1 * SECOND_NS,
            attributes=semconv_chat_attributes(input_tokens=1000, output_tokens=200),
        ),
        make_span(
            trace_id=TRACE_A,
            span_id=sid(3),
            parent_span_id=sid(1),
            name="execute_tool search",
            start_ns=t0 + 3 * SECOND_NS,
            attributes={a.GEN_AI_OPERATION_NAME: a.OP_EXECUTE_TOOL, a.GEN_AI_TOOL_NAME: "search"},
        ),
        make_span(
            trace_id=TRACE_A,
            span_id=sid(4),
            parent_span_id=sid(3),
            name="chat gpt-4o",
            start_ns=t0 + 4 * SECOND_NS,
            attributes={
                **semconv_chat_attributes(input_tokens=3000, output_tokens=100),
                a.DRIFTLINE_RETRY_ATTEMPT: 1,
            },
            status_code=STATUS_ERROR,
            status_message="RateLimitError: slow down",
        ),
    ]


def vllm_trace() -> list[Any]:
    """A lone vLLM request span (root, no workflow key, model not in the price table)."""
    t0 = BASE_TIME_NS - 5 * SECOND_NS  # starts first: printed first
    return [
        make_span(
            trace_id=TRACE_B,
            span_id=sid(9),
            name=a.VLLM_REQUEST_SPAN_NAME,
            start_ns=t0,
            attributes=vllm_request_attributes(prompt_tokens=350, completion_tokens=120),
        )
    ]


def resources(spans: list[Any], service: str) -> Any:
    return make_resource_spans(
        spans,
        resource_attributes={a.SERVICE_NAME: service, a.DEPLOYMENT_ENVIRONMENT_NAME: "prod"},
    )


def message(kind: str = "traces_data") -> Any:
    build = traces_data if kind == "traces_data" else export_request
    return build(resources(agent_trace(), "agent-svc"), resources(vllm_trace(), "vllm-svc"))


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[Any], str]:
    code = main(["normalize", *args])
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    return code, lines, captured.err


@pytest.fixture
def no_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A driftline.toml in the working directory or $DRIFTLINE_CONFIG must not leak in.
    monkeypatch.delenv("DRIFTLINE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)


pytestmark = pytest.mark.usefixtures("no_config")


def test_protobuf_file_prints_one_completed_event_per_llm_span(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "traces.pb"
    path.write_bytes(message().SerializeToString())
    code, events, err = run_cli([str(path)], capsys)
    assert code == 0, err
    (summary,) = err.splitlines()  # nothing rejected: only the counts
    assert summary.startswith(f"driftline normalize: {path} (OTLP protobuf): 1 documents, ")
    assert ": 3 events, 0 rejected, " in summary
    assert [e["span_id"] for e in events] == [sid(9).hex(), sid(2).hex(), sid(4).hex()]
    for e in events:
        assert tuple(e) == EVENT_FIELD_NAMES
        assert e["start_ts"].endswith("Z") and e["end_ts"].endswith("Z")
    starts = [iso_to_micros(e["start_ts"]) for e in events]
    assert starts == sorted(starts)
    assert starts[1] == BASE_TIME_NS // 1000 + 1_000_000

    vllm, plan, retried = events
    # vLLM: no workflow anywhere, a root without agent: the service names it; unpriced.
    assert (vllm["workflow"], vllm["loop_depth"]) == ("vllm-svc", 1)
    assert (vllm["cost_usd"], vllm["price_source"]) == (None, "unknown")
    # Agent trace: workflow from the root agent, depth counts the tool.
    assert (plan["workflow"], plan["loop_depth"]) == ("planner", 1)
    assert (retried["workflow"], retried["loop_depth"]) == ("planner", 2)
    # gpt-4o from genai-prices: 2.5 / 10 USD per million input / output tokens.
    assert plan["cost_usd"] == pytest.approx(1000 * 2.5e-6 + 200 * 10e-6)
    assert plan["price_source"] == "genai-prices"
    assert retried["retry_attempt"] == 1
    assert retried["status"] == "error"


def test_export_request_and_otlp_json_give_the_same_events(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outputs = []
    for name, payload in [
        ("a.pb", message("traces_data").SerializeToString()),
        ("b.pb", message("export_request").SerializeToString()),
        ("c.json", to_otlp_json(message())),
        ("d.json", json.dumps(json.loads(to_otlp_json(message())), indent=2).encode()),
    ]:
        path = tmp_path / name
        path.write_bytes(payload)
        code, events, err = run_cli([str(path)], capsys)
        assert code == 0, name
        assert (
            " 5 spans: 3 events, 0 rejected, 0 duplicates, 2 skipped (not LLM calls); 2 traces"
            in err
        )
        outputs.append(events)
    assert len(outputs[0]) == 3
    assert all(out == outputs[0] for out in outputs)


def test_ndjson_with_a_trace_split_across_lines_and_a_bad_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spans = agent_trace()
    children_first = to_otlp_json(traces_data(resources(spans[1:], "agent-svc")))
    root_later = to_otlp_json(traces_data(resources(spans[:1], "agent-svc")))
    path = tmp_path / "collector-file-exporter.jsonl"
    path.write_bytes(children_first + b"\n" + b'{"not": "otlp"}\n' + root_later + b"\n")
    code, events, err = run_cli([str(path), "--traces", str(tmp_path / "traces.jsonl")], capsys)
    assert code == 1  # a document was rejected; the rest is printed
    (reject,) = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert reject["reason"] == "not_otlp"
    assert "(OTLP/JSON): 3 documents (1 rejected), " in err and ": 2 events, 0 rejected, " in err
    assert reject["document"] == 2
    assert [(e["workflow"], e["loop_depth"]) for e in events] == [("planner", 1), ("planner", 2)]
    (trace,) = [json.loads(line) for line in (tmp_path / "traces.jsonl").read_text().splitlines()]
    assert tuple(trace) == TRACE_FIELD_NAMES
    assert trace["trace_id"] == TRACE_A.hex()
    assert trace["root_span_id"] == sid(1).hex()
    assert trace["start_ts"] == "2026-01-01T00:00:00.000000Z"
    assert (trace["span_count"], trace["llm_call_count"], trace["max_loop_depth"]) == (4, 2, 2)
    assert (trace["input_tokens"], trace["output_tokens"], trace["total_tokens"]) == (
        4000,
        300,
        4300,
    )
    assert trace["amplification"] == pytest.approx(4300 / 1200)
    assert (trace["retries"], trace["error_count"], trace["closed_by"]) == (1, 1, "flush")
    assert trace["cost_usd"] == pytest.approx(4000 * 2.5e-6 + 300 * 10e-6)


def test_rejected_span_is_reported_on_stderr_and_the_rest_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = make_span(
        trace_id=b"", span_id=sid(7), attributes=semconv_chat_attributes(), name="chat"
    )
    path = tmp_path / "traces.pb"
    path.write_bytes(traces_data(resources([*agent_trace(), broken], "svc")).SerializeToString())
    code, events, err = run_cli([str(path)], capsys)
    assert code == 1
    assert len(events) == 2
    (reject,) = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert ": 2 events, 1 rejected, " in err
    assert reject["span_id"] == sid(7).hex()
    assert reject["reason"] and reject["detail"]


def test_spans_past_a_messages_first_rejects_count_as_rejected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = [
        make_span(trace_id=b"", span_id=sid(n), attributes=semconv_chat_attributes(), name="x")
        for n in range(1, 1501)
    ]
    path = tmp_path / "traces.pb"
    path.write_bytes(traces_data(resources(broken, "svc")).SerializeToString())
    code, events, err = run_cli([str(path)], capsys)
    assert (code, events) == (1, [])
    assert "1 documents, 1500 spans: 0 events, 1500 rejected, 0 duplicates, 0 skipped" in err
    assert '"too_many_rejects"' in err


@pytest.mark.parametrize(
    "content",
    [b"hello, this is a text file\n", b'{"resource": "spans?"}\n', b"\x00\xff\xfe garbage"],
)
def test_not_otlp_exits_2_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    code, events, err = run_cli([str(path)], capsys)
    assert code == 2
    assert events == []
    assert "is not OTLP traces" in err


def test_traces_are_not_written_over_the_recording_being_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "recording.pb"
    recording = message().SerializeToString()
    path.write_bytes(recording)
    code, events, err = run_cli(
        [str(path), "--traces", str(tmp_path / "." / "recording.pb")], capsys
    )
    assert (code, events) == (2, [])
    assert "it is the recording being read" in err
    assert path.read_bytes() == recording


def test_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, events, err = run_cli([str(tmp_path / "absent.pb")], capsys)
    assert (code, events) == (2, [])
    assert "no such file" in err


def test_price_overrides_and_attribute_limits_come_from_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "driftline.toml"
    config.write_text(
        "[streams]\nmax_span_attributes = 2\n\n"
        '[prices."meta-llama/Llama-3.1-8B-Instruct"]\ninput_per_mtok = 0.1\noutput_per_mtok = 0.2\n'
    )
    path = tmp_path / "traces.pb"
    path.write_bytes(message().SerializeToString())
    code = main(["--config", str(config), "normalize", str(path)])
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0
    vllm = events[0]
    assert vllm["price_source"] == "config"
    assert vllm["cost_usd"] == pytest.approx(350 * 0.1e-6 + 120 * 0.2e-6)
    assert all(len(e["attributes"]) <= 2 for e in events)


def test_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "driftline.toml"
    config.write_text("[prices.x]\ninput_per_mtok = -1\noutput_per_mtok = 1\n")
    path = tmp_path / "traces.pb"
    path.write_bytes(message().SerializeToString())
    assert main(["--config", str(config), "normalize", str(path)]) == 2
    assert "prices.x.input_per_mtok" in capsys.readouterr().err


def test_installed_command_in_a_subprocess(tmp_path: Path) -> None:
    path = tmp_path / "traces.json"
    path.write_bytes(to_otlp_json(message()))
    proc = subprocess.run(
        [sys.executable, "-m", "driftline.cli", "normalize", str(path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["span_id"] for line in proc.stdout.splitlines()] == [
        sid(9).hex(),
        sid(2).hex(),
        sid(4).hex(),
    ]


def test_offline_result_does_not_depend_on_message_boundaries() -> None:
    spans = agent_trace() + vllm_trace()
    whole = OfflinePipeline()
    whole.feed(traces_data(resources(spans, "svc")).SerializeToString())
    one_by_one = OfflinePipeline()
    for span in reversed(spans):
        one_by_one.feed(traces_data(resources([span], "svc")).SerializeToString())
    a_result, b_result = whole.finish(), one_by_one.finish()
    assert a_result.events == b_result.events
    assert a_result.traces == b_result.traces
    assert (b_result.documents, b_result.otlp_documents, b_result.span_count) == (5, 5, 5)
    assert b_result.unknown_models == {("vllm", "meta-llama/Llama-3.1-8B-Instruct"): 1}


def test_split_otlp_file() -> None:
    doc = to_otlp_json(message())
    assert split_otlp_file(doc) == [(doc, "otlp_json")]
    assert split_otlp_file(doc + b"\n\n" + doc + b"\n") == [(doc, "otlp_json"), (doc, "otlp_json")]
    binary = message().SerializeToString()
    assert split_otlp_file(binary) == [(binary, "otlp_proto")]
    broken = b'{\n  "resourceSpans": [\n'
    assert split_otlp_file(broken) == [(broken, "otlp_json")]


@pytest.mark.parametrize("content", [b"", b"\n \n", b'{"resourceSpans": []}\n'])
def test_empty_otlp_message_is_read_and_prints_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    path = tmp_path / "empty"
    path.write_bytes(content)
    code, events, err = run_cli([str(path)], capsys)
    assert (code, events) == (0, [])
    if content.strip():
        assert "1 documents, 0 spans: 0 events, 0 rejected, 0 duplicates, 0 skipped" in err
    else:  # not "1 documents": nothing was in the file
        assert err.strip().endswith(": empty file: 0 documents, 0 spans")
