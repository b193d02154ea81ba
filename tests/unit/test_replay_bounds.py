"""`driftline replay` holds its file to the bounds spans are held to, and never dies on it."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

from driftline.schemas.event import micros_to_iso

START_US = 1_767_225_600_000_000  # 2026-01-01


def line(n: int, rng: random.Random, **overrides: object) -> str:
    start = START_US + n * 2_000_000
    doc: dict[str, object] = {
        "trace_id": f"{n:032x}",
        "span_id": f"{n:016x}",
        "start_ts": micros_to_iso(start),
        "end_ts": micros_to_iso(start + 900_000),
        "workflow": "checkout",
        "response_model": "gpt-4o",
        "input_tokens": rng.randint(200, 400),
        "output_tokens": float(rng.randint(80, 160)),  # a float, as other tools write them
        "latency_ms": rng.uniform(700, 1100),
        "ttft_ms": rng.uniform(150, 250),
        "validation_failed": 0,  # 0/1, as other tools write flags
        "status": "ok",
    }
    doc.update(overrides)
    return json.dumps(doc)


def test_non_finite_and_out_of_bounds_lines_are_rejected_by_number(tmp_path: Path) -> None:
    rng = random.Random(3)
    lines = [line(n, rng) for n in range(3000)]
    # During the warm-up: a non-finite TTFT froze the baseline at NaN and replay died with a
    # traceback; out-of-bounds values went into baselines as they were.
    lines[99] = line(99, rng, ttft_ms=float("inf"), latency_ms=float("inf"))
    lines[199] = line(199, rng, ttft_ms=float("nan"))
    lines[299] = line(299, rng, kv_cache_usage=7.5)
    lines[399] = line(399, rng, output_tokens=2**64)
    events = tmp_path / "events.ndjson"
    events.write_text("\n".join(lines) + "\n")
    done = subprocess.run(
        [sys.executable, "-m", "driftline.cli", "replay", str(events)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.returncode == 1, done.stderr[-3000:]  # some lines rejected
    for number, why in ((100, "Infinity"), (200, "NaN"), (300, "not a fraction"), (400, "")):
        assert any(
            f"events.ndjson:{number}: " in text and why in text for text in done.stderr.splitlines()
        ), (number, done.stderr[-3000:])
    assert "2996 events used, 4 rejected" in done.stderr, done.stderr[-3000:]
