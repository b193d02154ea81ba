"""``driftline doctor`` without a broker: the findings it can make from the configuration and
a missing store, one line each, and no secret in its output (the Kafka and lag checks run
against a real broker in tests/integration/test_doctor.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from driftline.cli import main

HOOK_PATH = "/services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(("DRIFTLINE_", "PAGERDUTY_")) or name.endswith("_PASSWORD"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_findings_name_the_problem_and_never_a_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEAM_PD_KEY", "0123456789abcdef0123456789abcdef")
    config = tmp_path / "driftline.toml"
    config.write_text(
        '[[pagerduty.routes]]\nrouting_key_env = "TEAM_PD_KEY"\n'
        '[[pagerduty.routes]]\nkind = "webhook"\nrouting_key_env = "CHAT_HOOK"\n'
        f'url = "https://hooks.example.com{HOOK_PATH}"\n'
    )
    missing = tmp_path / "nowhere"
    code = main(["--config", str(config), "doctor", "--store", f"chdb://{missing}"])
    out = capsys.readouterr().out
    assert code == 1
    assert "ok    config    configuration and secrets present" in out
    assert "warn  kafka     not checked: no Kafka to connect to" in out
    assert f"FAIL  store     no store at {missing}" in out
    assert "pagerduty[0] (pagerduty, workflow '*', >= warning) -> events.pagerduty.com;" in out
    assert "TEAM_PD_KEY set" in out
    assert "webhook[1] (webhook, workflow '*', >= warning) -> hooks.example.com;" in out
    assert out.splitlines()[-1] == "1 failed, 1 warnings, 3 ok"
    assert "0123456789abcdef" not in out and HOOK_PATH not in out
    assert not missing.exists()


def test_a_missing_route_secret_fails_in_the_config_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "driftline.toml"
    config.write_text('[[pagerduty.routes]]\nrouting_key_env = "TEAM_PD_KEY"\n')
    assert main(["--config", str(config), "doctor", "--store", f"chdb://{tmp_path}/x"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  config    pagerduty.routes[0].routing_key_env: TEAM_PD_KEY is not set" in out
    assert "warn  paging    pagerduty[0]" in out and "TEAM_PD_KEY NOT SET" in out


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("0123456789abcdef0123456789abcde", "31 characters"),  # cut short
        ("0123456789abcdef0123456789abcdef\n", "33 characters, with a space or newline at"),
        ('"0123456789abcdef0123456789abcd"', "32 characters, not only letters and digits"),
        ("https://events.pagerduty.com/v2/enqueue", "39 characters, not only letters and"),
    ],
)
def test_a_routing_key_of_another_shape_is_a_warning_that_never_prints_it(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    key: str,
    problem: str,
) -> None:
    monkeypatch.setenv("TEAM_PD_KEY", key)
    config = tmp_path / "driftline.toml"
    config.write_text('[[pagerduty.routes]]\nrouting_key_env = "TEAM_PD_KEY"\n')
    main(["--config", str(config), "doctor", "--store", f"chdb://{tmp_path}/x"])
    out = capsys.readouterr().out
    paging = [line for line in out.splitlines() if "  paging  " in line]
    assert len(paging) == 1 and paging[0].startswith("warn  paging    pagerduty[0]"), out
    assert "TEAM_PD_KEY set, but not shaped as a routing key (32 letters and digits)" in out
    assert problem in paging[0]
    assert key.strip().strip('"') not in out and "0123456789" not in out


@pytest.mark.parametrize(
    "key", ["0123456789abcdef0123456789abcdef", "R0UT1NGKEYR0UT1NGKEYR0UT1NGKEY01"]
)
def test_a_routing_key_of_the_right_shape_is_ok(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    monkeypatch.setenv("PAGERDUTY_ROUTING_KEY", key)
    main(["doctor", "--store", f"chdb://{tmp_path}/x"])
    out = capsys.readouterr().out
    assert "ok    paging    default (pagerduty" in out and "PAGERDUTY_ROUTING_KEY set\n" in out
