"""``driftline doctor --page-test`` against a real local HTTP receiver standing in for the
PagerDuty Events API v2 (validating events as the API does) and chat webhooks: every route
gets its test event, PagerDuty's incident is resolved under its own dedup key, failures are
named per route, and no secret reaches the output."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftline.cli import main
from driftline.commands.doctor import Finding, page_test_findings
from driftline.config import load_settings
from tests.utils.http_receiver import (
    PAGERDUTY_PATH,
    HttpReceiver,
    ReceivedRequest,
    Reply,
    ReplySpec,
)

ROOT = Path(__file__).resolve().parents[2]
ROUTING_KEY = "R0UT1NGKEYR0UT1NGKEYR0UT1NGKEY01"
HOOK_PATH = "/services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX"
AM_PATH = "/alertmanager/hook-token-0123456789"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(("DRIFTLINE_", "PAGERDUTY_")) or name.endswith("_PASSWORD"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A store at the current schema, made by a writing command in its own process."""
    url = f"chdb://{tmp_path_factory.mktemp('doctor') / 'db'}"
    made = subprocess.run(
        [sys.executable, "-m", "driftline.cli", "sql", "--write", "SELECT 1", "--store", url],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert made.returncode == 0, made.stderr
    return url


def write_config(path: Path, receiver: HttpReceiver) -> Path:
    config = path / "driftline.toml"
    config.write_text(
        f'[pagerduty]\nevents_url = "{receiver.url}"\n'
        '[[pagerduty.routes]]\nrouting_key_env = "TEAM_PD_KEY"\nmin_severity = "critical"\n'
        'workflow = "support"\n'
        f'[[pagerduty.routes]]\nkind = "webhook"\nurl = "{receiver.base_url}{HOOK_PATH}"\n'
        '[[pagerduty.routes]]\nkind = "webhook"\nrouting_key_env = "AM_HOOK"\n'
        'webhook_format = "alertmanager"\n'
    )
    return config


@pytest.fixture()
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[HttpReceiver]:
    with HttpReceiver(validate_pagerduty=True) as running:
        monkeypatch.setenv("TEAM_PD_KEY", ROUTING_KEY)
        monkeypatch.setenv("AM_HOOK", running.base_url + AM_PATH)
        yield running


def secrets_in(text: str) -> list[str]:
    return [s for s in (ROUTING_KEY, HOOK_PATH, "XXXXXXXX", AM_PATH, "hook-token") if s in text]


def test_every_route_gets_its_test_event_and_the_incident_resolves(
    receiver: HttpReceiver, store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, receiver)
    assert main(["--config", str(config), "doctor", "--store", store]) == 0
    assert receiver.requests == []  # only when asked

    code = main(["--config", str(config), "doctor", "--store", store, "--page-test"])
    out = capsys.readouterr().out
    assert code == 0, out
    by_path: dict[str, list[dict[str, object]]] = {}
    for request in receiver.requests:
        by_path.setdefault(request.path, []).append(request.json())
    assert sorted(by_path) == sorted([PAGERDUTY_PATH, HOOK_PATH, AM_PATH])

    trigger, resolve = by_path[PAGERDUTY_PATH]
    assert trigger["event_action"] == "trigger" and resolve["event_action"] == "resolve"
    assert trigger["routing_key"] == resolve["routing_key"] == ROUTING_KEY
    key = str(trigger["dedup_key"])
    assert key.startswith(f"driftline-page-test/{socket.gethostname()[:64]}/")
    assert resolve["dedup_key"] == key
    payload = trigger["payload"]
    assert isinstance(payload, dict)
    assert payload["summary"].startswith("TEST from driftline doctor --page-test")
    assert "no action needed" in payload["summary"]
    assert payload["severity"] == "critical"  # the route's lowest, whatever its workflow filter

    (message,) = by_path[HOOK_PATH]
    assert "TEST from driftline doctor --page-test" in str(message["text"])
    firing, resolved = by_path[AM_PATH]
    assert (firing["status"], resolved["status"]) == ("firing", "resolved")
    assert firing["groupKey"] == resolved["groupKey"] != key  # one key per route

    assert "ok    page      pagerduty[0] -> 127.0.0.1: trigger 202, resolve 202 in " in out
    assert f"(dedup key {key})" in out
    assert "ok    page      webhook[1] -> 127.0.0.1: message 202 in " in out
    assert "ok    page      webhook[2] -> 127.0.0.1: firing 202, resolved 202 in " in out
    assert out.splitlines()[-1] == "0 failed, 1 warnings, 8 ok"  # Kafka not configured
    assert secrets_in(out) == []


def test_a_refused_event_fails_its_route_without_printing_the_secret(
    receiver: HttpReceiver, store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, receiver)
    # PagerDuty refuses the key and echoes it back, as a misconfigured proxy might.
    receiver.respond_with(
        lambda r: Reply(400, body=f"unknown key {ROUTING_KEY}") if r.path == PAGERDUTY_PATH else 202
    )
    code = main(["--config", str(config), "doctor", "--store", store, "--page-test"])
    out = capsys.readouterr().out
    assert code == 1
    assert (
        "FAIL  page      pagerduty[0] -> 127.0.0.1: trigger not delivered: HTTP 400: "
        "unknown key ***" in out
    )
    assert [r.json()["event_action"] for r in receiver.requests if r.path == PAGERDUTY_PATH] == [
        "trigger"
    ]  # no resolve for a trigger never taken, no retry of a 400
    assert "ok    page      webhook[1]" in out and "ok    page      webhook[2]" in out
    assert out.splitlines()[-1] == "1 failed, 1 warnings, 7 ok"
    assert secrets_in(out) == []


def test_a_refusal_body_reaches_the_terminal_without_its_control_characters(
    receiver: HttpReceiver, store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, receiver)
    hostile = "bad \x1b]0;HACKED\x07\x1b[2J\u202eevil"
    receiver.respond_with(lambda r: Reply(400, body=hostile) if r.path == PAGERDUTY_PATH else 202)
    code = main(["--config", str(config), "doctor", "--store", store, "--page-test"])
    out = capsys.readouterr().out
    assert code == 1
    assert "HTTP 400: bad " in out
    assert not {"\x1b", "\x07", "\u202e"} & set(out), out


waits: list[float] = []


async def no_wait(seconds: float) -> None:
    waits.append(seconds)


def test_retries_a_busy_endpoint_then_names_a_resolve_left_open(
    receiver: HttpReceiver, tmp_path: Path
) -> None:
    waits.clear()
    settings = load_settings(write_config(tmp_path, receiver))
    # the trigger: 503 then 429 (Retry-After 30 s, capped) then taken; the resolve refused
    busy: list[ReplySpec] = [503, Reply(429, headers={"Retry-After": "30"})]

    def pagerduty_answer(request: ReceivedRequest) -> ReplySpec:
        if request.path != PAGERDUTY_PATH:
            return 202
        if busy:
            return busy.pop(0)
        return 400 if request.json()["event_action"] == "resolve" else 202

    receiver.respond_with(pagerduty_answer)
    pagerduty = [f for f in page_test_findings(settings, sleep=no_wait) if "pagerduty" in f.detail]
    assert waits == [1.0, 5.0]
    (finding,) = pagerduty
    assert finding.status == "FAIL"
    sent = [r for r in receiver.requests if r.path == PAGERDUTY_PATH]
    key = sent[0].json()["dedup_key"]
    assert [r.answered for r in sent] == [503, 429, 202, 400]
    assert finding.detail.startswith(
        "pagerduty[0] -> 127.0.0.1: trigger 202 after 3 attempts, resolve not delivered: HTTP 400"
    )
    assert finding.detail.endswith(f"; resolve {key} by hand")


def test_a_missing_secret_or_a_dead_endpoint_fails_the_route(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    waits.clear()
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}{PAGERDUTY_PATH}"
    config = tmp_path / "driftline.toml"
    config.write_text(
        f'[pagerduty]\nevents_url = "{dead}"\n'
        '[[pagerduty.routes]]\nrouting_key_env = "TEAM_PD_KEY"\n'
        '[[pagerduty.routes]]\nkind = "webhook"\nrouting_key_env = "CHAT_HOOK"\n'
    )
    monkeypatch.setenv("TEAM_PD_KEY", ROUTING_KEY)
    findings = page_test_findings(load_settings(config), sleep=no_wait)
    assert [f.status for f in findings] == ["FAIL", "FAIL"]
    assert findings[0].detail.startswith("pagerduty[0] -> 127.0.0.1: trigger not delivered: no")
    assert findings[0].detail.endswith("after 3 attempts") and waits == [1.0, 2.0]
    assert findings[1] == Finding(
        "page",
        "FAIL",
        "webhook[1]: not sent: route webhook[1]: webhook route has no url and environment "
        "variable CHAT_HOOK is not set; set one of them",
    )
    assert ROUTING_KEY not in str(findings)
