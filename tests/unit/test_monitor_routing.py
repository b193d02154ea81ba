"""Routing authority: the answering model decides; aliases match dated snapshots by rule."""

from __future__ import annotations

import pytest

from driftline.streams.monitor import Monitor, model_allowed
from driftline.streams.monitor.routing import MAX_LISTED_OFFENDERS
from tests.unit.test_monitor import T0, S, event, of, settings

ALLOWED = ["gpt-4o-mini", "gpt-4o", "claude-3-5-sonnet"]
SNAPSHOT = "gpt-4o-mini-2024-07-18"


@pytest.mark.parametrize(
    ("model", "alias", "exact"),
    [
        ("gpt-4o-mini", True, True),
        ("gpt-4o-mini-2024-07-18", True, False),  # OpenAI: -YYYY-MM-DD
        ("claude-3-5-sonnet-20241022", True, False),  # Anthropic: -YYYYMMDD
        ("claude-3-5-sonnet@20240620", True, False),  # Vertex AI: @YYYYMMDD
        ("gpt-4o-0613", True, False),  # older OpenAI: -MMDD
        ("gpt-4o-mini-tts", False, False),  # another model, not a date
        ("gpt-4o-mini-2024-07-18-ft", False, False),
        ("gpt-4-turbo-2024-04-09", False, False),
        ("gpt-4", False, False),
        ("mistralai/Mistral-7B-Instruct-v0.3", False, False),
    ],
)
def test_alias_rule_and_strict_mode(model: str, alias: bool, exact: bool) -> None:
    assert model_allowed(model, ALLOWED) is alias
    assert model_allowed(model, ALLOWED, exact=True) is exact


def test_a_dated_name_on_the_list_covers_only_itself() -> None:
    assert model_allowed("gpt-4o-2024-08-06", ["gpt-4o-2024-08-06"])
    assert not model_allowed("gpt-4o-2024-11-20", ["gpt-4o-2024-08-06"])
    assert not model_allowed("gpt-4o", ["gpt-4o-2024-08-06"])


def test_the_answering_model_decides() -> None:
    """A gateway answering an allowed request with another model is shadow routing."""
    swapped = event(1, T0, 400, request_model="gpt-4o-mini", response_model="gpt-4-turbo")
    dated = event(
        2, T0 + S, 400, request_model="gpt-4o-mini", response_model="gpt-4o-mini-2024-07-18"
    )
    unanswered = event(3, T0 + 2 * S, 400, request_model="gpt-4o", response_model="")
    monitor = Monitor(
        settings(["input_tokens"], chat={"allowed_models": ["gpt-4o-mini", "gpt-4o"]})
    )
    routing = of(monitor.process([swapped, dated, unanswered], []), "routing/chat/unallowed_model")
    assert [r["evidence"]["span_id"] for r in routing] == ["s1"]
    evidence = routing[0]["evidence"]
    assert (evidence["model"], evidence["request_model"]) == ("gpt-4-turbo", "gpt-4o-mini")


def test_exact_mode_flags_dated_answers() -> None:
    dated = event(1, T0, 400, request_model="gpt-4o-mini", response_model="gpt-4o-mini-2024-07-18")
    cfg = settings(
        ["input_tokens"], chat={"allowed_models": ["gpt-4o-mini"], "model_match": "exact"}
    )
    routing = of(Monitor(cfg).process([dated], []), "routing/chat/unallowed_model")
    assert len(routing) == 1 and routing[0]["evidence"]["model_match"] == "exact"


def test_a_call_naming_no_model_is_not_judged() -> None:
    anonymous = event(1, T0, 400, request_model="", response_model="")
    monitor = Monitor(settings(["input_tokens"], chat={"allowed_models": ["gpt-4o"]}))
    assert of(monitor.process([anonymous], []), "routing") == []


def test_a_flood_of_model_names_is_one_incident() -> None:
    """5,000 distinct unapproved names (a broken gateway, or spans written to flood the
    pager): one open, a bounded number of updates, the first names listed."""
    calls = [
        event(i, T0 + i * S // 100, 400, response_model=f"rogue-{i}", bundle_id=f"b{i}")
        for i in range(5000)
    ]
    monitor = Monitor(settings(["input_tokens"], chat={"allowed_models": ["gpt-4o"]}))
    out = [t for t in monitor.process(calls, []) if t["kind"] == "routing"]
    opens = [t for t in out if t["transition"] == "open"]
    updates = [t for t in out if t["transition"] == "update"]
    assert len(opens) == 1 and opens[0]["dedup_key"] == "routing/chat/unallowed_model/"
    assert 1 <= len(updates) <= 12  # a new offender is news until the list is full
    listed = updates[-1]["evidence"]["offenders"]
    assert listed == [f"rogue-{i}" for i in range(len(listed))]
    (alert,) = monitor.open_alerts()
    assert alert["evidence"]["offenders"] == [f"rogue-{i}" for i in range(MAX_LISTED_OFFENDERS)]
    assert alert["evidence"]["offenders_truncated"] is True


def test_a_second_offender_updates_the_incident_without_reopening() -> None:
    first = event(1, T0, 400, response_model="gpt-4-turbo")
    second = event(2, T0 + S, 400, response_model="claude-3-opus", bundle_id="b2")
    again = event(3, T0 + 2 * S, 400, response_model="gpt-4-turbo")
    monitor = Monitor(settings(["input_tokens"], chat={"allowed_models": ["gpt-4o"]}))
    out = of(monitor.process([first, second, again], []), "routing/chat/unallowed_model")
    assert [t["transition"] for t in out] == ["open", "update"]
    assert out[-1]["evidence"]["offenders"] == ["gpt-4-turbo", "claude-3-opus"]
    assert out[-1]["score"] == 2.0
