"""URLs in the configuration carry no password, token or key (those belong in the variables
the ``*_env`` fields name), and a webhook URL's secret path is never printed. Every refusal
names the field and where its value came from, and never repeats the secret."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from driftline.cli import main
from driftline.config import ConfigError, load_settings

SECRET = "S3CR3T"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("DRIFTLINE_") or name.endswith(("_PASSWORD", "_ROUTING_KEY")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PAGERDUTY_ROUTING_KEY", "0123456789abcdef0123456789abcdef")
    monkeypatch.setenv("CLICKHOUSE_PASSWORD", "")
    monkeypatch.chdir(tmp_path)


def check(tmp_path: Path, toml: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    path = tmp_path / "driftline.toml"
    path.write_text(toml)
    code = main(["--config", str(path), "config", "check"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


URL_SECRETS = [
    ("store", "url", "clickhouse://host:8123/driftline?password=S3CR3T"),
    ("store", "url", "clickhouse://driftline_writer:S3CR3T@host:8123/driftline"),
    ("store", "url", "clickhouse://S3CR3T_token@host:8123/driftline"),
    ("store", "url", "clickhouse://driftline_writer:S3/CR3T@host:8123/driftline"),
    ("store", "url", "clickhouse://writer@corp:S3CR3T@host:8123/driftline"),
    ("store", "url", "clickhouse://AKIA7S3CR3T0123456789XYZ@host:8123/driftline"),
    ("store", "url", "clickhouses://host:8443/driftline?secure=1&access_token=S3CR3T"),
    ("store", "reader_url", "clickhouse://reader@host:8123/driftline?X-Api-Key=S3CR3T"),
    ("kafka", "bootstrap_servers", "user:S3CR3T@broker:9092"),
    ("kafka", "bootstrap_servers", "broker-1:9092,S3CR3T@broker-2:9092"),
    ("alerts", "dashboard_base_url", "http://admin:S3CR3T@grafana:3000"),
    ("alerts", "dashboard_base_url", "https://grafana.example.com/?auth_token=S3CR3T"),
    ("alerts", "runbook_base_url", "https://S3CR3T@wiki.example.com/runbooks"),
]


@pytest.mark.parametrize(("section", "key", "url"), URL_SECRETS)
def test_a_secret_in_a_url_is_refused_and_not_echoed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], section: str, key: str, url: str
) -> None:
    code, out, err = check(tmp_path, f'[{section}]\n{key} = "{url}"\n', capsys)
    assert code == 2, out
    assert f"{section}.{key}: must not " in err and "(in " in err
    assert SECRET not in out + err


@pytest.mark.parametrize(("section", "key", "url"), URL_SECRETS)
def test_a_secret_in_a_url_from_the_environment_is_refused_and_not_echoed(
    monkeypatch: pytest.MonkeyPatch, section: str, key: str, url: str
) -> None:
    variable = f"DRIFTLINE_{section.upper()}__{key.upper()}"
    monkeypatch.setenv(variable, url)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert f"{section}.{key}: must not " in str(caught.value)
    assert f"(from the environment, {variable})" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_urls_without_secrets_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    toml = (
        '[store]\nurl = "clickhouse://driftline_writer@clickhouse:8123/driftline?secure=1"\n'
        '[kafka]\nbootstrap_servers = "broker-1:9092,broker-2:9092"\n'
        '[alerts]\ndashboard_base_url = "https://grafana.example.com/grafana?orgId=1"\n'
    )
    code, out, err = check(tmp_path, toml, capsys)
    assert code == 0, err
    printed = json.loads(out.split("\n", 1)[1])
    assert printed["alerts"]["dashboard_base_url"] == "https://grafana.example.com/grafana?orgId=1"


WEBHOOK = (
    '[[pagerduty.routes]]\nkind = "webhook"\n'
    'url = "https://hooks.slack.com/services/T000/B000/S3CR3T"\n'
)


def test_a_webhook_url_with_a_secret_path_passes_and_is_printed_redacted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = check(tmp_path, WEBHOOK, capsys)
    assert code == 0, err
    assert SECRET not in out + err and "T000" not in out
    printed = json.loads(out.split("\n", 1)[1])
    assert printed["pagerduty"]["routes"][0]["url"] == "https://hooks.slack.com/<redacted>"
    settings = load_settings(tmp_path / "driftline.toml")
    assert settings.pagerduty.routes[0].url == "https://hooks.slack.com/services/T000/B000/S3CR3T"


def test_an_error_beside_a_webhook_url_does_not_print_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = check(tmp_path, WEBHOOK + 'webhook_format = "teams"\n', capsys)
    assert code == 2
    assert "pagerduty.routes.0.webhook_format: " in err
    assert SECRET not in out + err
