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
from driftline.schemas.event import (
    EVENT_FIELDS,
    MAX_ATTRIBUTE_VALUE_CHARS,
    UNSAFE_NAME_CHAR,
    micros_to_iso,
    to_wire,
)
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
        ("workflow", "w" * 600, "longer than 521"),  # room for the safe form's suffix
        ("status", "weird", "status"),
        ("start_ts", micros_to_iso(4_102_444_800_000_000), "2000-2090"),  # 2100
        ("end_ts", micros_to_iso(START_US + 30 * 3_600_000_000), "over a day"),
        ("span_id", "", "trace_id, span_id: missing"),
        ("error_type", "E" * 600, "longer than 512"),
        ("model_version", "v" * 100_000, "longer than 512"),
        # A cost is the price book's to work out: one read from a file is held to what any
        # price gives for its tokens, so a sum over the store cannot be blown up by one line.
        ("cost_usd", 9.2e18, "more than any price gives"),
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
    # Free text cannot drive a terminal; derived ids are names like any other; attributes
    # are as many and as long as the normalizer keeps.
    escape = "\x1b]0;PWNED\x07\x1b[2J\u202e"
    lines.append(json.dumps(event(102, error_type=escape, prompt_version=escape)))
    lines.append(json.dumps(event(103, bundle_id="'; DROP TABLE x --\x00")))
    lines.append(json.dumps(event(104, attributes={"gen_ai.request.seed": "7" * 3_000_000})))
    done, store = load(tmp_path, lines)
    assert done.returncode == 1, done.stderr
    stderr = done.stderr.splitlines()
    for n, (_, _, why) in enumerate(hostile, start=2):
        assert any(
            line.startswith(f"{tmp_path / 'events.ndjson'}:{n}:") and why in line for line in stderr
        ), (n, why, stderr)
    nan_line = len(hostile) + 2
    assert any(f":{nan_line}: NaN is not a JSON number" in line for line in stderr), stderr
    assert secret not in done.stdout + done.stderr

    opened = open_store(f"chdb://{store}", StoreSettings())
    try:
        rows = opened.query(
            "SELECT span_id, workflow, output_tokens, attributes, error_type, prompt_version,"
            " bundle_id FROM driftline.llm_requests ORDER BY span_id"
        ).to_pylist()
    finally:
        opened.close()
    assert [r["span_id"] for r in rows] == [f"{n:016x}" for n in (0, 100, 101, 102, 103, 104)]
    assert (
        rows[3]["error_type"] == rows[3]["prompt_version"] == "\ufffd]0;PWNED\ufffd\ufffd[2J\ufffd"
    )
    assert UNSAFE_NAME_CHAR.search(rows[4]["bundle_id"]) is None
    assert dict(rows[5]["attributes"]) == {"gen_ai.request.seed": "7" * MAX_ATTRIBUTE_VALUE_CHARS}
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


def test_the_cost_bound_is_the_highest_price_the_configuration_accepts() -> None:
    from driftline.config import MAX_PRICE_PER_MTOK
    from driftline.schemas.checks import MAX_USD_PER_TOKEN

    assert MAX_USD_PER_TOKEN == MAX_PRICE_PER_MTOK / 1e6


def test_originals_in_the_file_do_not_take_the_places_of_attributes() -> None:
    from driftline.commands.records import AttributeBounds, bounded_attributes

    attributes = {f"gen_ai.usage.k{n:02d}": str(n) for n in range(32)}
    attributes["driftline.original.workflow"] = "w'"
    attributes["driftline.original.anything"] = "dropped: no normalizer writes it"
    kept = bounded_attributes(attributes, {"driftline.original.tenant": "t'"}, AttributeBounds())
    assert {k: v for k, v in kept.items() if k.startswith("gen_ai.")} == {
        k: v for k, v in attributes.items() if k.startswith("gen_ai.")
    }
    assert kept["driftline.original.workflow"] == "w'"
    assert kept["driftline.original.tenant"] == "t'"
    assert "driftline.original.anything" not in kept


def test_a_bad_line_past_the_checked_start_is_one_reject(tmp_path: Path) -> None:
    # The file's first 64 KB are checked for text before a store is opened; a line of
    # bad UTF-8 after them, or one nested past the parser's depth, used to stop the load
    # with a traceback and nothing stored.
    good = [json.dumps(event(n)) for n in range(200)]
    assert sum(len(line) + 1 for line in good[:-2]) > 1 << 16
    events = tmp_path / "events.ndjson"
    bad_text, deep = b'{"workflow": "\xff"}', b"[" * 100_000 + b"]" * 100_000
    body = (
        [line.encode() for line in good[:-2]] + [bad_text, deep] + [g.encode() for g in good[-2:]]
    )
    events.write_bytes(b"\n".join(body) + b"\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "driftline.cli",
            "load",
            str(events),
            "--store",
            f"chdb://{tmp_path}/s",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert f"{events}:199: not UTF-8 text" in done.stderr
    assert f"{events}:200: nested too deeply" in done.stderr
    assert "read 200 events" in done.stdout and ": 200 requests" in done.stdout, done.stdout


def test_a_byte_order_mark_is_no_part_of_the_first_record(tmp_path: Path) -> None:
    events = tmp_path / "events.ndjson"
    events.write_bytes(
        b"\xef\xbb\xbf" + b"".join(json.dumps(event(n)).encode() + b"\n" for n in range(3))
    )
    for command in (
        ["load", str(events), "--store", f"chdb://{tmp_path}/s"],
        ["replay", str(events)],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "driftline.cli", *command],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr


def test_a_trace_summary_ending_before_its_start_or_past_2090_is_rejected() -> None:
    from driftline.commands.records import checked_record
    from driftline.schemas.event import TRACE_FIELDS, from_wire

    def trace(start: str, end: str) -> dict[str, Any]:
        return from_wire(
            {"trace_id": "t1", "workflow": "w", "start_ts": start, "end_ts": end}, TRACE_FIELDS
        )

    assert (
        checked_record(trace("2026-01-01T00:00:00Z", "2026-01-01T00:00:05Z"), TRACE_FIELDS) is None
    )
    for start, end in (
        ("2026-01-01T00:00:05Z", "2026-01-01T00:00:00Z"),
        ("2026-01-01T00:00:00Z", "2099-01-01T00:00:00Z"),
    ):
        problem = checked_record(trace(start, end), TRACE_FIELDS)
        assert problem is not None and problem.startswith("start_ts, end_ts"), (start, end)
