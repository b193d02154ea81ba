"""`driftline load` holds an NDJSON file to the bounds the normalizer holds spans to."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from driftline.config import StoreSettings
from driftline.schemas.event import EVENT_FIELDS, UNSAFE_NAME_CHAR, micros_to_iso, to_wire
from driftline.store import open_store

# A day ago, whole seconds: inside any retention the store keeps.
START_US = (int(time.time()) - 86_400) * 1_000_000


def event(n: int, **overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {f.name: None for f in EVENT_FIELDS}
    record.update(
        {
            "trace_id": f"{n:032x}",
            "span_id": f"{n:016x}",
            "parent_span_id": "",
            "start_ts": START_US + n * 1_000_000,
            "end_ts": START_US + n * 1_000_000 + 800_000,
            "workflow": "checkout",
            "status": "ok",
            "input_tokens": 100,
            "output_tokens": 50,
            "latency_ms": 800.0,
            "attributes": {"gen_ai.request.temperature": "0.2"},
        }
    )
    for name in ("service", "environment", "agent", "tenant", "user_hash", "session_id"):
        record[name] = ""
    for name in ("route", "operation", "provider", "request_model", "response_model"):
        record[name] = ""
    for name in ("model_version", "prompt_version", "retrieval_index_version"):
        record[name] = ""
    for name in ("router_version", "bundle_id", "price_source", "finish_reason", "error_type"):
        record[name] = ""
    for name in ("cache_read_tokens", "cache_write_tokens", "reasoning_tokens"):
        record[name] = 0
    for name in ("retry_attempt", "loop_depth", "tool_calls"):
        record[name] = 0
    record["validation_failed"] = False
    record.update(overrides)
    return to_wire(record)


def load(tmp_path: Path, lines: list[str]) -> tuple[subprocess.CompletedProcess[str], Path]:
    events = tmp_path / "events.ndjson"
    events.write_text("".join(line + "\n" for line in lines))
    store = tmp_path / "store"
    done = subprocess.run(
        [sys.executable, "-m", "driftline.cli", "load", str(events), "--store", f"chdb://{store}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    return done, store


def test_hostile_lines_are_rejected_by_line_and_the_rest_is_loaded(tmp_path: Path) -> None:
    hostile = [
        ("output_tokens", -5, "out of range"),
        ("output_tokens", 2**63 - 1, "output_tokens"),
        ("kv_cache_usage", 7.5, "not a fraction"),
        ("ttft_ms", 1e300, "ttft_ms"),
        ("latency_ms", 90_000_000.0, "over a day"),
        ("workflow", "w" * 600, "longer than 512"),
        ("status", "weird", "status"),
        ("start_ts", micros_to_iso(4_102_444_800_000_000), "2000-2090"),  # 2100
    ]
    lines = [json.dumps(event(0))]
    for n, (field, value, _) in enumerate(hostile, start=1):
        lines.append(json.dumps({**event(n), field: value}))
    # JSON has no NaN: Python's decoder would take it, the file is refused line by line.
    lines.append(json.dumps(event(99, cost_usd=math.nan)))
    secret = "the patient's record says"
    lines.append(
        json.dumps(event(100, attributes={"Input.Value": secret, "gen_ai.request.seed": "7"}))
    )
    # A name the dashboards could not carry is made safe, as the normalizer makes it; a whole
    # number written as a float is read as the number.
    lines.append(json.dumps(event(101, workflow="w'; DROP TABLE x --", output_tokens=50.0)))
    done, store = load(tmp_path, lines)
    assert done.returncode == 1, done.stderr
    stderr = done.stderr.splitlines()
    for n, (_, _, why) in enumerate(hostile, start=2):
        assert any(
            line.startswith(f"{tmp_path / 'events.ndjson'}:{n}:") and why in line for line in stderr
        ), (n, why, stderr)
    assert any(":10: NaN is not a JSON number" in line for line in stderr), stderr
    assert secret not in done.stdout + done.stderr

    opened = open_store(f"chdb://{store}", StoreSettings())
    try:
        rows = opened.query(
            "SELECT span_id, workflow, output_tokens, attributes"
            " FROM driftline.llm_requests ORDER BY span_id"
        ).to_pylist()
    finally:
        opened.close()
    assert [r["span_id"] for r in rows] == [f"{n:016x}" for n in (0, 100, 101)]
    assert dict(rows[1]["attributes"]) == {"gen_ai.request.seed": "7"}  # content dropped
    assert UNSAFE_NAME_CHAR.search(rows[2]["workflow"]) is None
    assert dict(rows[2]["attributes"])["driftline.original.workflow"] == "w'; DROP TABLE x --"
    assert rows[2]["output_tokens"] == 50


def test_a_binary_file_is_refused_before_any_store_is_made(tmp_path: Path) -> None:
    events = tmp_path / "spans.pb"
    events.write_bytes(b"\x0a\xff\xfe\x80" * 100)
    store = tmp_path / "store"
    done = subprocess.run(
        [sys.executable, "-m", "driftline.cli", "load", str(events), "--store", f"chdb://{store}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "not UTF-8 text" in done.stderr and "Traceback" not in done.stderr
    assert not store.exists()
