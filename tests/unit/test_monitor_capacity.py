"""Cardinality: the monitor tracks at most ``detectors.max_workflows`` workflows."""

from __future__ import annotations

from driftline.config import AlertSettings, Settings
from driftline.streams.monitor import Monitor
from driftline.streams.monitor.engine import UNTRACKED
from driftline.streams.monitor.routing import MAX_LISTED_OFFENDERS
from tests.unit.test_monitor import T0, S, event, of, small_settings

KEY = "budget/*/tracked_workflows/"


def capped(max_workflows: int, hold_s: float = 60.0) -> Settings:
    return small_settings(hold_s, enabled_metrics=["input_tokens"], max_workflows=max_workflows)


def established(monitor: Monitor, names: list[str]) -> None:
    """Each workflow past its warm-up: a frozen reference, never pushed out."""
    calls = [
        event(i, T0 + i * S // 10, 400 + i % 7, workflow=name) for name in names for i in range(60)
    ]
    assert monitor.process(calls, []) == []


def test_one_off_names_replace_each_other_not_established_workflows() -> None:
    monitor = Monitor(capped(3))
    established(monitor, ["chat", "search"])
    flood = [event(i, T0 + 10 * S + i, 400, workflow=f"w{i}") for i in range(1000)]
    out = monitor.process(flood, [])
    assert of(out, KEY) == []  # room was made each time: nothing unmonitored
    assert monitor.workflows() == ["chat", "search", "w999"]
    assert monitor.evicted_workflows == 999 and monitor.untracked_records == 0


def test_a_flood_of_one_off_names_does_not_keep_a_new_workflow_from_its_reference() -> None:
    # More new names per batch than the cap: each used to push out the least recently seen
    # workflow without a reference, the one warming up too, batch after batch.
    monitor = Monitor(capped(4))
    for batch in range(6):
        at = T0 + batch * S
        calls = [event(i, at + i, 400 + i % 7, workflow="zz-new") for i in range(20)]
        calls += [event(i, at, 400, workflow=f"a{batch}-{i}") for i in range(6)]
        monitor.process(calls, [])
    assert "zz-new" in monitor.workflows() and monitor.evicted_workflows > 0
    assert [s["frozen"] for _, _, s, _ in monitor.detector_summaries("zz-new")] == [True]


def test_at_the_cap_new_workflows_raise_one_warning_that_resolves() -> None:
    monitor = Monitor(capped(2, hold_s=60.0))
    established(monitor, ["chat", "search"])
    late = [event(i, T0 + 10 * S + i * S, 400, workflow=f"new{i}") for i in range(30)]
    out = monitor.process(late, [])
    alerts = of(out, KEY)
    assert [a["transition"] for a in alerts][:1] == ["open"]
    assert all(a["transition"] != "open" for a in alerts[1:])  # one incident
    first = alerts[0]
    assert (first["kind"], first["severity"], first["threshold"]) == ("budget", "warning", 2.0)
    assert first["workflow"] == UNTRACKED
    assert monitor.untracked_records == 30
    assert set(monitor.workflows()) == {"chat", "search", UNTRACKED}
    (alert,) = [a for a in monitor.open_alerts() if a["dedup_key"] == KEY]
    listed = alert["evidence"]["offenders"]
    assert len(listed) == MAX_LISTED_OFFENDERS and set(listed) < {f"new{i}" for i in range(30)}
    assert alert["evidence"]["offenders_truncated"] is True
    # The tracked workflows go on; once no untracked record has come for the hold-down,
    # the warning resolves (at the fleet's event time).
    quiet = [
        event(i, T0 + 100 * S + i * S, 400, workflow=w)
        for i in range(120)
        for w in ("chat", "search")
    ]
    resolved = [t for t in of(monitor.process(quiet, []), KEY) if t["transition"] == "resolve"]
    assert len(resolved) == 1 and resolved[0]["alert_id"] == first["alert_id"]


def test_the_warning_survives_a_snapshot() -> None:
    monitor = Monitor(capped(1))
    established(monitor, ["chat"])
    monitor.process([event(1, T0 + 20 * S, 400, workflow="other")], [])
    restored = Monitor(capped(1))
    for workflow in monitor.workflows():
        restored.restore(workflow, monitor.snapshot(workflow))
    assert [a["dedup_key"] for a in restored.open_alerts()] == [KEY]
    # Still over the cap after the restore: the same incident, not a new one.
    out = restored.process([event(2, T0 + 21 * S, 400, workflow="another")], [])
    assert [t["transition"] for t in of(out, KEY)] in ([], ["update"])


def two_bundles(max_bundles: int = 2, hold_s: float = 60.0) -> Settings:
    return small_settings(hold_s, max_bundles_per_workflow=max_bundles)


def serving(names: list[str], start_s: int, count: int) -> list[dict]:
    """Steady calls of each bundle (its model named like it), one a second per bundle."""
    return [
        event(
            i * len(names) + n,
            T0 + (start_s + i) * S + n,
            400 + i % 7,
            bundle_id=name,
            response_model=f"model-{name}",
        )
        for i in range(count)
        for n, name in enumerate(names)
    ]


BUNDLE_KEY = "budget/chat/tracked_bundles/"


def test_a_bundle_past_the_cap_raises_one_warning_naming_it() -> None:
    monitor = Monitor(two_bundles())
    assert of(monitor.process(serving(["b1", "b2"], 0, 60), []), BUNDLE_KEY) == []
    # Left out while b1 and b2 serve: the warning opens once b3 has been left out for twice
    # canary_active_s (600 s): a rollout's new bundle gets a place after one.
    out = monitor.process(serving(["b1", "b2", "b3"], 60, 1199), [])
    assert of(out, BUNDLE_KEY) == []
    out = monitor.process(serving(["b1", "b2", "b3"], 1259, 2), [])
    warnings = of(out, BUNDLE_KEY)
    assert [w["transition"] for w in warnings] == ["open"]  # one incident, updates aside
    (alert,) = [a for a in monitor.open_alerts() if a["dedup_key"] == BUNDLE_KEY]
    assert alert["evidence"]["offenders"] == ["b3 (model-b3)"]
    assert alert["evidence"]["setting"] == "detectors.max_bundles_per_workflow"
    assert (alert["severity"], alert["threshold"]) == ("warning", 2.0)
    assert monitor.untracked_bundle_records == 1201
    # b3 stops: the warning resolves once, after b3 counts as retired (canary_active_s
    # past its last call) and the hold-down of the workflow's event time.
    out = monitor.process(serving(["b1", "b2"], 1261, 600), [])
    assert of(out, BUNDLE_KEY) == []
    out = monitor.process(serving(["b1", "b2"], 1861, 120), [])
    assert [w["transition"] for w in of(out, BUNDLE_KEY)] == ["resolve"]
    assert monitor.untracked_bundle_records == 1201


def armed_bundles(monitor: Monitor) -> set[str]:
    return {b for b, _, summary, _ in monitor.detector_summaries("chat") if summary["frozen"]}


def in_batches(monitor: Monitor, calls: list[dict], seconds: int = 60) -> list[dict]:
    """Feed ``calls`` (time order) a minute of event time at a time, as a stream would."""
    out: list[dict] = []
    start = 0
    while start < len(calls):
        until = calls[start]["end_ts"] + seconds * S
        end = next((i for i in range(start, len(calls)) if calls[i]["end_ts"] >= until), None)
        out += monitor.process(calls[start:end], [])
        start = len(calls) if end is None else end
    return out


def test_bundles_serving_at_once_past_the_cap_leave_the_first_ones_monitored() -> None:
    """An A/B test of two prompts, each with a fallback model: four bundles serving at once
    with room for two. The first two keep their places and arm; the other two are listed
    by one warning, open for as long as they serve. Bundles not armed yet used to give way
    to a newcomer, and the newcomer to them: none ever armed, with no warning."""
    monitor = Monitor(two_bundles())
    out = in_batches(monitor, serving(["a1", "a2", "b1", "b2"], 0, 1300))
    assert armed_bundles(monitor) == {"a1", "a2"}
    warnings = of(out, BUNDLE_KEY)
    assert [w["transition"] for w in warnings if w["transition"] != "update"] == ["open"]
    (alert,) = [a for a in monitor.open_alerts() if a["dedup_key"] == BUNDLE_KEY]
    assert sorted(alert["evidence"]["offenders"]) == ["b1 (model-b1)", "b2 (model-b2)"]


def with_sparse_fallback(start_s: int, minutes: int) -> list[dict]:
    """b1 and b2 a call a second; fallback b3 a call every two minutes (twice the
    hold-down), from ``start_s`` for ``minutes``."""
    steady = serving(["b1", "b2"], start_s, minutes * 60)
    sparse = [
        event(900_000 + i, T0 + (start_s + 120 * i) * S + 7, 400, bundle_id="b3")
        for i in range(minutes // 2)
    ]
    return sorted(steady + sparse, key=lambda e: (e["end_ts"], e["span_id"]))


def test_a_sparse_bundle_left_out_keeps_one_warning_open_while_it_serves() -> None:
    """A fallback answering a call every two minutes, left out: its warning held only until
    the hold-down after each call, and reopened at the next (a page every few minutes)."""
    monitor = Monitor(two_bundles(hold_s=60.0))
    in_batches(monitor, serving(["b1", "b2"], 0, 60))
    out = in_batches(monitor, with_sparse_fallback(60, 120))
    assert [w["transition"] for w in of(out, BUNDLE_KEY) if w["transition"] != "update"] == ["open"]
    # b3 stops: retired 50 of its gaps (100 min) past its last call, then the hold-down.
    out = in_batches(monitor, serving(["b1", "b2"], 60 + 120 * 60, 100 * 60 + 240))
    assert [w["transition"] for w in of(out, BUNDLE_KEY)] == ["resolve"]


def test_the_bundles_left_out_survive_a_snapshot() -> None:
    monitor = Monitor(two_bundles(hold_s=60.0))
    in_batches(monitor, serving(["b1", "b2"], 0, 60))
    in_batches(monitor, with_sparse_fallback(60, 30))
    restored = Monitor(two_bundles(hold_s=60.0))
    restored.restore("chat", monitor.snapshot("chat"))
    out = in_batches(restored, with_sparse_fallback(60 + 30 * 60, 60))
    assert [w["transition"] for w in of(out, BUNDLE_KEY) if w["transition"] != "update"] == []
    assert BUNDLE_KEY in {a["dedup_key"] for a in restored.open_alerts()}


def rollout_bundle(b: int) -> list[dict]:
    """Bundle ``x<b>``'s 150 calls, one a second after bundle b-1's: its tokens x4 from
    the 70th on (armed by then)."""
    return [
        event(
            b * 1000 + i,
            T0 + (b * 150 + i) * S,
            (400 + i % 7) * (4 if i >= 70 else 1),
            bundle_id=f"x{b}",
            response_model=f"m{b}",
        )
        for i in range(150)
    ]


def test_a_rollout_flood_keeps_the_open_alerts_of_a_workflow_bounded() -> None:
    """A workflow answered by one new model after another (60 bundles, each shifting its
    tokens x4 once armed, then going quiet): drift alerts open on each, and the workflow's
    open alerts never pass what max_bundles_per_workflow allows."""
    settings = two_bundles(max_bundles=3)
    metrics = len(Monitor(settings)._drift.metrics)
    bound = 3 * 2 * metrics + 1  # a drift and a canary alert per bundle and metric, the warning
    monitor = Monitor(settings)
    opened: set[str] = set()
    peak_bundles = 0
    for b in range(60):
        calls = rollout_bundle(b)
        for start in range(0, 150, 10):
            out = monitor.process(calls[start : start + 10], [])
            opened |= {t["dedup_key"] for t in out if t["transition"] == "open"}
            open_now = [a for a in monitor.open_alerts() if a["workflow"] == "chat"]
            assert len(open_now) <= bound
            drifting = {a["bundle_id"] for a in open_now if a["kind"] == "drift"}
            peak_bundles = max(peak_bundles, len(drifting))
    drift_bundles = {k.split("/")[3] for k in opened if k.startswith("drift/")}
    assert len(drift_bundles) >= 30  # most bundles alarmed: the bound was put to the test
    assert peak_bundles == 3  # alerts of every tracked bundle open at once


OPEN_KEY = "budget/chat/open_alerts/"


def test_past_the_cap_of_open_alerts_per_kind_one_warning_stands_for_the_rest() -> None:
    """The rollout flood above with alerts.max_open_per_workflow_kind = 2: never more than
    two drift alerts open at once; the ones left out are counted and listed by one warning,
    as severe as the worst of them, which resolves once none is left out."""
    settings = two_bundles(max_bundles=3)
    settings = settings.model_copy(
        update={"alerts": AlertSettings(hold_down_s=60.0, max_open_per_workflow_kind=2)}
    )
    monitor = Monitor(settings)
    transitions: list[dict] = []
    for b in range(20):
        calls = rollout_bundle(b)
        for start in range(0, 150, 10):
            out = monitor.process(calls[start : start + 10], [])
            transitions += out
            drift_open = [a for a in monitor.open_alerts() if a["kind"] == "drift"]
            assert len(drift_open) <= 2
    warnings = of(transitions, OPEN_KEY)
    assert warnings and warnings[0]["transition"] == "open"
    assert monitor.alerts_over_cap > 0
    listed = {str(k) for w in warnings for k in w["evidence"]["offenders"]}
    assert listed and all(k.startswith("drift/chat/") for k in listed)
    drift_severities = {t["severity"] for t in transitions if t["kind"] == "drift"}
    assert warnings[0]["severity"] in drift_severities
    assert warnings[0]["evidence"]["setting"] == "alerts.max_open_per_workflow_kind"
    # Each episode is one incident: it resolves after the hold-down once nothing more is
    # left out, before the next one opens.
    states = [w["transition"] for w in warnings if w["transition"] != "update"]
    assert states == ["open", "resolve"] * (len(states) // 2)
    quiet = serving(["x19"], 20 * 150, 400)
    monitor.process(quiet, [])
    assert all(a["dedup_key"] != OPEN_KEY for a in monitor.open_alerts())


def test_the_cap_does_not_hold_back_another_kind_or_a_cap_warning() -> None:
    settings = two_bundles(max_bundles=2)
    settings = settings.model_copy(
        update={"alerts": AlertSettings(hold_down_s=60.0, max_open_per_workflow_kind=1)}
    )
    monitor = Monitor(settings)
    monitor.process(serving(["b1", "b2"], 0, 60), [])
    # A third bundle past max_bundles_per_workflow: its (budget) warning opens even with
    # the cap at 1, and a second cap warning of the same kind is not held back either.
    out = monitor.process(serving(["b1", "b2", "b3"], 60, 1300), [])
    assert [w["transition"] for w in of(out, BUNDLE_KEY)] == ["open"]
    assert monitor.alerts_over_cap == 0
