"""``driftline replay``: deterministic NDJSON alert transitions from recorded events."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

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
