"""Routing authority: the answering model decides; aliases match dated snapshots by rule."""

from __future__ import annotations

import pytest

from driftline.streams.monitor import Monitor, model_allowed
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
