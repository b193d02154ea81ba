"""The monitor's snapshot: a round trip continues identically, bad bytes never crash."""

from __future__ import annotations

import ast
from pathlib import Path

import orjson
import pytest

from driftline.streams.monitor import Monitor, SnapshotError
from driftline.streams.monitor.snapshot import SNAPSHOT_MAGIC
from tests.unit.test_monitor import T0, S, event, of, run, settings, token_stream

ROOT = Path(__file__).resolve().parents[2]


def cfg_with_everything() -> object:
    return settings(
        ["input_tokens", "latency", "finish_reason"],
        hold_s=60.0,
        chat={
            "budgets": {
                "max_tokens_per_request": 4000,
                "tokens_per_window": 200_000,
                "window_s": 600,
                "monthly_cost_usd": 50.0,
            }
        },
    )


def events_with_shift() -> list[dict]:
    tokens = token_stream(3, 2400, 1200, 1800, 1.6)
    return [event(i, T0 + i * S, t, cost_usd=0.002) for i, t in enumerate(tokens)]


def test_round_trip_continues_identically() -> None:
    cfg = cfg_with_everything()
    events = events_with_shift()
    whole = run(Monitor(cfg), events, batch=100)  # type: ignore[arg-type]

    first = Monitor(cfg)  # type: ignore[arg-type]
    before = run(first, events[:1300], batch=100)
    assert first.open_alerts(), "an alert must be open across the restart"
    snapshots = {wf: first.snapshot(wf) for wf in first.dirty_workflows()}
    second = Monitor(cfg)  # type: ignore[arg-type]
    for wf, blob in snapshots.items():
        second.restore(wf, blob)
    assert second.snapshot("chat") == snapshots["chat"]  # byte for byte
    after = run(second, events[1300:], batch=100)
    assert before + after == whole
    assert len(of(whole, "drift/chat/input_tokens")) >= 2
    assert {t["transition"] for t in whole} >= {"open", "resolve"}


def test_snapshot_is_versioned_json_with_tagged_arrays() -> None:
    monitor = Monitor(cfg_with_everything())  # type: ignore[arg-type]
    run(monitor, events_with_shift()[:900])
    blob = monitor.snapshot("chat")
    assert blob.startswith(SNAPSHOT_MAGIC)
    doc = orjson.loads(blob[len(SNAPSHOT_MAGIC) :])
    assert doc["version"] == 3 and doc["workflow"] == "chat"
    ring = doc["state"]["bundles"]["b1"]["ts_ring"]["$nd"]
    assert ring[:2] == ["int64", [100]]


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b"not a snapshot",
        lambda b: b[: len(b) // 2],  # truncated
        lambda b: b.replace(b'"version":3', b'"version":9'),
        lambda b: b.replace(b'"int64",[100]', b'"int64",[101]'),  # shape and bytes disagree
        lambda b: b.replace(b'"int64"', b'"object"', 1),
        lambda b: b.replace(b'"condition":"', b'"condition":"x', 1),
        lambda b: b.replace(b'"now":', b'"now":-', 1),
        lambda b: b.replace(b'"workflow":"chat"', b'"workflow":"other"', 2),  # the alert's too
        lambda b: b.replace(b'"detectors":{', b'"detectors":{"ghost":{},', 1),
    ],
)
def test_corrupt_snapshot_raises_snapshot_error_and_restores_nothing(damage: object) -> None:
    monitor = Monitor(cfg_with_everything())  # type: ignore[arg-type]
    run(monitor, events_with_shift()[:1300])
    blob = monitor.snapshot("chat")
    bad = damage(blob)  # type: ignore[operator]
    assert bad != blob
    fresh = Monitor(cfg_with_everything())  # type: ignore[arg-type]
    with pytest.raises(SnapshotError):
        fresh.restore("chat", bad)
    assert fresh.workflows() == []


def test_snapshot_from_other_detector_settings_is_refused() -> None:
    monitor = Monitor(settings(["input_tokens"]))
    run(monitor, events_with_shift()[:600])
    other = Monitor(settings(["input_tokens", "latency"]))
    with pytest.raises(SnapshotError, match="settings enable"):
        other.restore("chat", monitor.snapshot("chat"))


def test_no_pickle_in_the_monitor() -> None:
    for path in sorted((ROOT / "streams" / "monitor").glob("*.py")):
        tree = ast.parse(path.read_text())
        imported = {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names
        } | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not {"pickle", "marshal", "shelve", "dill"} & imported, path
