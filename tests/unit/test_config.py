"""Settings: file + environment, errors that name the field, docs that cover every key."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from driftline.cli import main
from driftline.config import ConfigError, Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]


def _models_in(annotation: object) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _paths(model: type[BaseModel], prefix: str | None = "") -> list[str]:
    """Dotted paths of every setting; keys inside dicts or lists of models are left bare
    (``prefix=None``: the reference documents them once per table, e.g. the budget keys)."""
    out = []
    for name, info in model.model_fields.items():
        out.append(name if prefix is None else f"{prefix}{name}")
        for nested in _models_in(info.annotation):
            direct = nested is info.annotation and prefix is not None
            out.extend(_paths(nested, f"{prefix}{name}." if direct else None))
    return out


def _documented(path: str, tokens: set[str]) -> bool:
    return any(t == path or t.endswith("." + path) or t.startswith(path + ".") for t in tokens)


def test_every_setting_is_documented() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    prose = re.sub(r"```.*?```", "", doc, flags=re.DOTALL)
    tokens = {t.strip("[]") for t in re.findall(r"`([^`]+)`", prose)}
    missing = [p for p in _paths(Settings) if not _documented(p, tokens)]
    assert not missing, f"docs/configuration.md does not describe {missing}"


def test_example_file_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DRIFTLINE_CONFIG", raising=False)
    settings = load_settings(ROOT / "driftline.example.toml")
    assert settings.workflows["support-chat"].budgets.max_tokens_per_request == 16000
    assert settings.pagerduty.routes[1].kind == "webhook"


def test_errors_name_every_bad_field(tmp_path: Path) -> None:
    bad = tmp_path / "driftline.toml"
    bad.write_text(
        "[kafka]\npartitions = 0\n"
        "[workflows.support.budgets]\nmax_tokens_per_request = -3\n"
        "[bogus]\nx = 1\n"
    )
    with pytest.raises(ConfigError) as info:
        load_settings(bad)
    text = str(info.value)
    assert "kafka.partitions" in text
    assert "workflows.support.budgets.max_tokens_per_request" in text
    assert "bogus" in text


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "driftline.toml"
    path.write_text("[kafka]\npartitions = 3\nconsumer_group = 'g'\n")
    monkeypatch.setenv("DRIFTLINE_KAFKA__PARTITIONS", "8")
    settings = load_settings(path)
    assert settings.kafka.partitions == 8
    assert settings.kafka.consumer_group == "g"


def test_store_follows_the_data_dir_unless_set(tmp_path: Path) -> None:
    path = tmp_path / "driftline.toml"
    path.write_text(f"[embedded]\ndata_dir = '{tmp_path / 'state'}'\n")
    assert load_settings(path).store.url == f"chdb://{tmp_path / 'state'}/chdb"
    path.write_text(f"[embedded]\ndata_dir = '{tmp_path}'\n[store]\nurl = 'chdb:///elsewhere'\n")
    assert load_settings(path).store.url == "chdb:///elsewhere"


def test_password_in_store_url_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "driftline.toml"
    path.write_text("[store]\nurl = 'clickhouse://writer:hunter2@db:8123/driftline'\n")
    with pytest.raises(ConfigError, match=r"store\.url: .*password"):
        load_settings(path)


def test_credentials_in_the_pagerduty_events_url_are_refused_or_not_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "driftline.toml"
    path.write_text(
        "[pagerduty]\nevents_url = 'https://admin:chpass-SECRET@pd.example.com/v2/enqueue'\n"
    )
    with pytest.raises(ConfigError, match=r"pagerduty\.events_url: .*password") as refused:
        load_settings(path)
    assert "SECRET" not in str(refused.value)
    path.write_text("[pagerduty]\nevents_url = 'https://pd.example.com/v2/enqueue?code=EVSECRET'\n")
    assert main(["--config", str(path), "config", "check"]) == 0
    assert "EVSECRET" not in capsys.readouterr().out


def test_config_check_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.toml"
    good.write_text("[kafka]\npartitions = 2\n")
    assert main(["--config", str(good), "config", "check"]) == 0
    assert '"partitions": 2' in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text("[kafka]\npartitions = 'many'\n")
    assert main(["--config", str(bad), "config", "check"]) == 2
    assert "kafka.partitions" in capsys.readouterr().err
