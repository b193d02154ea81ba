"""``driftline replay``: deterministic NDJSON alert transitions from recorded events."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.cli import main
from driftline.schemas.alert import TRANSITION_FIELD_NAMES
from driftline.schemas.event import EVENT_FIELDS, from_wire, to_wire

T0 = 1_700_000_000_000_000
S = 1_000_000

CONFIG = """
[detectors]
warmup_events = 200
window_events = 100
enabled_metrics = ["input_tokens", "output_tokens", "finish_reason"]

[alerts]
hold_down_s = 120

[workflows.chat.budgets]
max_tokens_per_request = 3000
"""


def write_events(path: Path, shuffle: bool = False) -> None:
    rng = np.random.default_rng(21)
    tokens = np.exp(rng.normal(np.log(400), 0.5, 2500))
    tokens[1200:1700] *= 2.5
    lines = []
    for i, t in enumerate(tokens):
        e = from_wire({}, EVENT_FIELDS)
        e.update(
            trace_id=f"t{i:05d}",
            span_id=f"s{i:05d}",
            start_ts=T0 + i * S - 500,
            end_ts=T0 + i * S,
            workflow="chat",
            bundle_id="b1",
            input_tokens=int(t),
            output_tokens=int(t) // 3,
            finish_reason="stop",
            response_model="gpt-4o",
        )
        doc = to_wire(e)
        doc["field_from_a_newer_version"] = {"ignored": True}
        lines.append(json.dumps(doc))
    if shuffle:
        random.Random(4).shuffle(lines)
    path.write_text("\n".join(lines) + "\n")


def replay(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["replay", *argv])
    return code, capsys.readouterr().out


@pytest.fixture()
def files(tmp_path: Path) -> tuple[Path, Path]:
    events = tmp_path / "events.ndjson"
    config = tmp_path / "driftline.toml"
    write_events(events)
    config.write_text(CONFIG)
    return events, config


def test_same_input_same_bytes(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    events, config = files
    code1, first = replay(capsys, str(events), "--config", str(config))
    code2, second = replay(capsys, str(events), "--config", str(config))
    assert code1 == code2 == 0
    assert first == second and first


def test_input_order_does_not_matter(
    files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events, config = files
    shuffled = tmp_path / "shuffled.ndjson"
    write_events(shuffled, shuffle=True)
    _, ordered_out = replay(capsys, str(events), "--config", str(config))
    _, shuffled_out = replay(capsys, str(shuffled), "--config", str(config))
    assert ordered_out == shuffled_out


def test_prints_open_and_resolve_in_event_time_order(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    events, config = files
    _, out = replay(capsys, str(events), "--config", str(config))
    records = [json.loads(line) for line in out.splitlines()]
    assert all(list(r) == list(TRANSITION_FIELD_NAMES) for r in records)
    assert {r["transition"] for r in records} == {"open", "resolve"}
    times = [r["event_ts"] for r in records]
    assert times == sorted(times)  # ISO 8601 UTC strings sort as time
    drift = [r for r in records if r["dedup_key"] == "drift/chat/input_tokens/b1"]
    assert [r["transition"] for r in drift] == ["open", "resolve"]
    assert drift[0]["opened_at"].startswith("2023-11-14T22:33:")  # ~20 events after the shift
    budget = [r for r in records if r["kind"] == "budget"]
    assert budget and budget[0]["metric"] == "tokens_per_request"


def test_updates_only_on_request(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    events, config = files
    _, plain = replay(capsys, str(events), "--config", str(config))
    _, verbose = replay(capsys, str(events), "--config", str(config), "--updates")
    updates = [json.loads(x) for x in verbose.splitlines() if '"transition":"update"' in x]
    assert updates
    kept = [x for x in verbose.splitlines() if '"transition":"update"' not in x]
    assert kept == plain.splitlines()


def test_global_config_option_is_honoured(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    events, config = files
    code = main(["--config", str(config), "replay", str(events)])
    global_out = capsys.readouterr().out
    _, local_out = replay(capsys, str(events), "--config", str(config))
    assert code == 0 and global_out == local_out


def test_bad_line_names_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.ndjson"
    bad.write_text('{"trace_id": "a"}\nnot json\n')
    assert main(["replay", str(bad)]) == 2
    assert f"{bad}:2: not JSON" in capsys.readouterr().err


def test_store_gets_the_replay_once_however_often_it_runs(
    files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from driftline.store import open_store

    events, config = files
    config.write_text(CONFIG + "\n[store]\nttl_days = 3650\n")  # the events are from 2023
    url = f"chdb://{tmp_path / 'replayed'}"
    code, out = replay(capsys, str(events), "--config", str(config), "--store", url)
    _, verbose = replay(capsys, str(events), "--config", str(config), "--updates")
    assert code == 0
    assert replay(capsys, str(events), "--config", str(config), "--store", url)[1] == out
    store = open_store(url, read_only=True)  # no TTL change: these events are from 2023
    try:
        alerts = store.query(
            "SELECT alert_id, transition FROM driftline.llm_alerts ORDER BY event_ts, alert_id"
        ).to_pylist()
        baselines = store.query(
            "SELECT metric, n, p50 FROM driftline.workflow_baselines FINAL"
            " WHERE frozen ORDER BY metric"
        ).to_pylist()
    finally:
        store.close()
    transitions = [json.loads(line) for line in verbose.splitlines()]
    assert len(alerts) == len(transitions)  # updates too, and each once after two runs
    assert {(a["alert_id"], a["transition"]) for a in alerts} == {
        (t["alert_id"], t["transition"]) for t in transitions
    }
    assert [b["metric"] for b in baselines] == ["finish_reason", "input_tokens", "output_tokens"]
    tokens = next(b for b in baselines if b["metric"] == "input_tokens")
    assert tokens["n"] == 200 and 300 < tokens["p50"] < 550  # lognormal around 400 tokens


def test_an_otlp_protobuf_file_is_named_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

    traces = TracesData()
    span = traces.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = b"\xff" * 16, b"\xfe" * 8, "chat"
    path = tmp_path / "spans.pb"
    path.write_bytes(traces.SerializeToString())
    assert main(["replay", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{path} is binary" in captured.err and "driftline normalize" in captured.err


def test_otlp_json_is_named_with_the_command_that_converts_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "spans.json"
    path.write_text('{"resourceSpans": [{"scopeSpans": [{"spans": []}]}]}\n')
    assert main(["replay", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path} is OTLP/JSON" in err and f"driftline normalize {path}" in err


def test_lines_missing_required_fields_are_rejected_and_counted(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    events, config = files
    good = events.read_text()
    events.write_text(
        good
        + '{"trace_id": "x1", "span_id": "y1", "workflow": "chat"}\n'
        + "\n"
        + '{"trace_id": "x2", "span_id": "y2", "workflow": "chat", "start_ts": "yesterday",'
        + ' "end_ts": "2026-01-01T00:00:00Z"}\n'
    )
    code = main(["--config", str(config), "replay", str(events)])
    captured = capsys.readouterr()
    assert code == 1  # alerts printed, but input was dropped
    assert captured.out.count('"transition":"open"') >= 1
    assert f"rejected {events}:2501: missing start_ts, end_ts" in captured.err
    assert f"rejected {events}:2503: " in captured.err
    assert f"{events}: read 2503 lines: 2500 events used, 2 rejected, 1 skipped" in captured.err


def test_nothing_usable_exits_2_with_the_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "events.ndjson"
    path.write_text('{"trace_id": "a", "span_id": "b"}\n[1, 2]\n')
    assert main(["replay", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:1: missing start_ts, end_ts, workflow" in err
    assert f"{path}:2: expected a JSON object per line" in err
    assert "read 2 lines: 0 events used, 2 rejected" in err


def test_help_lists_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("replay", "normalize", "report", "sql"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "exit codes: 0 done 1 ran, but the work failed" in text, command
        assert "2 could not run" in text, command


def test_an_all_ascii_protobuf_file_is_still_recognized(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

    traces = TracesData()
    span = traces.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = b"a" * 16, b"b" * 8, "chat"
    data = traces.SerializeToString()
    data.decode("utf-8")  # valid UTF-8: only the control bytes give it away
    path = tmp_path / "spans.pb"
    path.write_bytes(data)
    assert main(["replay", str(path)]) == 2
    assert f"{path} is binary" in capsys.readouterr().err


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
def test_any_file_is_read_or_refused_and_every_line_is_counted(data: bytes) -> None:
    import tempfile

    from driftline.commands.replay import InputReport, ReplayInputError, read_ndjson

    with tempfile.NamedTemporaryFile(suffix=".ndjson") as file:
        file.write(data)
        file.flush()
        report = InputReport(file.name)
        try:
            records = read_ndjson(file.name, EVENT_FIELDS, report=report)
        except ReplayInputError as exc:
            assert file.name in str(exc)
            return
    assert len(records) == report.used
    assert report.used + len(report.rejects) + report.skipped == report.lines
