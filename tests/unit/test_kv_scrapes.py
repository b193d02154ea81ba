"""KV usage joined from scraped engine reports counts once per report in the KV baseline."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.config import DetectorSettings, Settings
from driftline.schemas import engine_metrics as em
from driftline.schemas.event import EVENT_FIELDS, from_wire
from driftline.streams.engine_attribution import (
    ENGINE_INSTANCE,
    ENGINE_KV_REPORT_NS,
    EngineAttribution,
)
from driftline.streams.engine_metrics import EngineMetricRows
from driftline.streams.monitor import Monitor, SnapshotError
from driftline.streams.monitor import snapshot as snap
from driftline.streams.monitor.drift import KV_REPORTS_KEPT, MAX_KV_ENGINES, take_report

T0 = 1_767_225_600_000_000  # us
S = 1_000_000
ENGINE = "vllm-0:8000"
MODEL = "llama"


def call(i: int, end_us: int, kv: float | None, report_ns: int | None, engine: str = ENGINE):
    e = from_wire({}, EVENT_FIELDS)
    attributes = {} if report_ns is None else {ENGINE_INSTANCE: engine}
    if report_ns is not None:
        attributes[ENGINE_KV_REPORT_NS] = str(report_ns)
    e.update(
        trace_id=f"t{i}",
        span_id=f"s{i}",
        start_ts=end_us - 1000,
        end_ts=end_us,
        workflow="batch",
        bundle_id="b1",
        input_tokens=400,
        output_tokens=100,
        latency_ms=1.0,
        finish_reason="stop",
        response_model=MODEL,
        provider="vllm",
        kv_cache_usage=kv,
        attributes=attributes,
    )
    return e


def monitor(warmup: int = 500, window: int = 500, metrics: tuple[str, ...] = ()) -> Monitor:
    return Monitor(
        Settings(
            detectors=DetectorSettings(
                warmup_events=warmup,
                window_events=window,
                settle_s=0,
                enabled_metrics=list(metrics) or None,
            )
        )
    )


def detector(m: Monitor, metric: str = "kv_pressure") -> Any:
    (bundle,) = m._states["batch"].bundles.values()
    return bundle.detectors[metric]


def feed(m: Monitor, events: list[dict[str, Any]], batch: int = 64) -> list[dict]:
    out: list[dict] = []
    for start in range(0, len(events), batch):
        out.extend(m.process(events[start : start + batch], []))
    return out


def test_the_join_marks_the_report_a_kv_value_came_from() -> None:
    rows = EngineMetricRows()
    for t_s, kv in ((10, 0.5), (25, 0.7)):
        rows.time_ns.append(T0 * 1000 + t_s * 10**9)
        rows.engine.append("vllm")
        rows.model.append(MODEL)
        rows.instance.append(ENGINE)
        rows.metric.append(em.KV_CACHE_USAGE)
        rows.value.append(kv)
    book = EngineAttribution(staleness_s=60)
    book.add(rows)
    events = [call(i, T0 + t_s * S, None, None) for i, t_s in enumerate((12, 20, 26))]
    own = call(3, T0 + 27 * S, 0.31, None)
    assert book.attribute([*events, own]) == 4
    assert [e["kv_cache_usage"] for e in events] == [0.5, 0.5, 0.7]
    assert [int(e["attributes"][ENGINE_KV_REPORT_NS]) for e in events] == [
        T0 * 1000 + 10 * 10**9,
        T0 * 1000 + 10 * 10**9,
        T0 * 1000 + 25 * 10**9,
    ]
    # The span's own KV is kept and is not marked as a report's.
    assert own["kv_cache_usage"] == 0.31 and ENGINE_KV_REPORT_NS not in own["attributes"]


def test_calls_sharing_a_report_are_one_kv_observation() -> None:
    rng = np.random.default_rng(3)
    events = []
    for r in range(15):
        kv = float(rng.beta(4, 6))
        for j in range(30):
            events.append(
                call(r * 30 + j, T0 + (r * 15 + j * 0.4) * S, kv, (T0 + r * 15 * S) * 1000)
            )
    m = monitor()
    feed(m, events)
    assert detector(m).n_warm == 15
    assert detector(m, "latency").n_warm == 450  # every call is still a latency sample


def test_a_kv_value_the_span_carries_counts_per_call() -> None:
    events = [call(i, T0 + i * S, 0.5, None) for i in range(300)]
    m = monitor()
    feed(m, events)
    assert detector(m).n_warm == 300


def test_reports_of_two_engines_count_apart() -> None:
    report = (T0 + 5 * S) * 1000
    events = [
        call(i, T0 + (10 + i) * S, 0.4 + 0.1 * (i % 2), report, engine=f"vllm-{i % 2}:8000")
        for i in range(10)
    ]
    m = monitor()
    feed(m, events)
    assert detector(m).n_warm == 2


def test_take_report_remembers_a_bounded_window_per_engine() -> None:
    taken: dict[str, list[int]] = {}
    assert [take_report(taken, ENGINE, t) for t in range(KV_REPORTS_KEPT)] == [True] * 32
    assert take_report(taken, ENGINE, 5) is False  # remembered
    assert take_report(taken, ENGINE, 100) is True
    # Report 0 is no longer remembered, and older than every report that is: not taken.
    assert take_report(taken, ENGINE, 0) is False
    assert take_report(taken, ENGINE, 50) is True  # between remembered ones: new
    assert take_report(taken, ENGINE, 50) is False
    assert len(taken[ENGINE]) == KV_REPORTS_KEPT
    for k in range(MAX_KV_ENGINES + 5):
        take_report(taken, f"e{k}", 1_000 + k)
    assert len(taken) == MAX_KV_ENGINES and "e0" not in taken and f"e{MAX_KV_ENGINES + 4}" in taken


def _stream(repeats: list[int], late: list[bool], shift_at: int) -> tuple[list, list]:
    """Calls with one report each (``once``), and the same with every report's value met by
    ``repeats[i]`` more calls, some ending after the next report's first call (``many``)."""
    rng = np.random.default_rng(7)
    once: list[dict] = []
    many: list[tuple[int, dict]] = []
    for r, extra in enumerate(repeats):
        kv = float(rng.beta(4, 6)) if r < shift_at else float(np.clip(rng.normal(0.8, 0.05), 0, 1))
        report_ns = (T0 + r * 15 * S) * 1000
        first = T0 + (r * 15 + 1) * S
        once.append(call(r, first, kv, report_ns))
        many.append((first, call(r, first, kv, report_ns)))
        for j in range(extra):
            # A late copy ends after the next report's first call (the calls overlap).
            end = first + (16 * S if late[r] and j == 0 else (j + 1) * S)
            many.append((end, call(100_000 + r * 10 + j, end, kv, report_ns)))
    many.sort(key=lambda p: p[0])
    return once, [e for _, e in many]


@settings(max_examples=15, deadline=None)
@given(
    st.lists(st.integers(0, 6), min_size=140, max_size=140),
    st.lists(st.booleans(), min_size=140, max_size=140),
)
def test_a_report_fed_many_times_decides_as_once(repeats: list[int], late: list[bool]) -> None:
    # One event per batch: the detector's state depends on how its values are batched
    # (update_many), and this compares what it is fed, not how.
    once, many = _stream(repeats, late, shift_at=100)
    a = monitor(warmup=60, window=30, metrics=("kv_pressure",))
    b = monitor(warmup=60, window=30, metrics=("kv_pressure",))
    opens_a = [t for t in feed(a, once, 1) if t["transition"] == "open"]
    opens_b = [t for t in feed(b, many, 1) if t["transition"] == "open"]
    assert opens_a, "the shift at report 100 is found"
    key = ("metric", "opened_at", "score", "baseline_value", "current_value")
    assert [[t[k] for k in key] for t in opens_a] == [[t[k] for k in key] for t in opens_b]
    assert snap.encode(detector(a).to_state()) == snap.encode(detector(b).to_state())


def test_the_reports_taken_survive_a_snapshot() -> None:
    events = [call(i, T0 + i * S, 0.4, (T0 + (i // 10) * 15 * S) * 1000) for i in range(50)]
    m = monitor()
    feed(m, events[:25])
    blob = m.snapshot("batch")
    restored = monitor()
    restored.restore("batch", blob)
    assert restored.snapshot("batch") == blob
    feed(m, events[25:])
    feed(restored, events[25:])
    assert detector(restored).n_warm == detector(m).n_warm == 5


def test_a_snapshot_without_reports_restores_and_bad_reports_are_refused() -> None:
    events = [call(i, T0 + i * S, 0.4, (T0 + (i // 10) * 15 * S) * 1000) for i in range(25)]
    m = monitor()
    feed(m, events)
    doc = snap.loads("batch", m.snapshot("batch"))
    (bundle,) = doc["bundles"].values()
    assert bundle["kv_reports"] == {ENGINE: [(T0 + k * 15 * S) * 1000 for k in range(3)]}
    del bundle["kv_reports"]  # a snapshot of the previous release
    older = monitor()
    older.restore("batch", snap.dumps("batch", doc))
    (restored,) = older._states["batch"].bundles.values()
    assert restored.kv_reports == {}
    for bad in ({ENGINE: [3, 2]}, {ENGINE: []}, {ENGINE: ["1"]}, {ENGINE: 1}, [1]):
        bundle["kv_reports"] = bad
        with pytest.raises(SnapshotError, match="kv_reports"):
            monitor().restore("batch", snap.dumps("batch", doc))
    bundle["kv_reports"] = {f"e{k}": [k] for k in range(MAX_KV_ENGINES + 1)}
    with pytest.raises(SnapshotError, match="at most"):
        monitor().restore("batch", snap.dumps("batch", doc))
    assert orjson.loads(m.snapshot("batch")[len(snap.SNAPSHOT_MAGIC) :])["version"] == 3


def test_a_bundle_without_engine_reports_snapshots_as_before() -> None:
    m = monitor()
    feed(m, [call(i, T0 + i * S, 0.4, None) for i in range(25)])
    (bundle,) = snap.loads("batch", m.snapshot("batch"))["bundles"].values()
    assert "kv_reports" not in bundle
