"""Prices are finite, non-negative and bounded, budget amounts finite and positive: a price of
1e308 or inf made every cost infinite, and pages carrying Infinity are refused. Every
refusal names the field and where its value came from."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from driftline.cli import main
from driftline.config import MAX_PRICE_PER_MTOK, ConfigError, load_settings


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


PRICE = "[prices.m]\ninput_per_mtok = 1\noutput_per_mtok = 2\n"


@pytest.mark.parametrize("value", ["1e308", "inf", "+inf", "-inf", "nan", "-1", "1000000.5"])
@pytest.mark.parametrize(
    "field", ["input_per_mtok", "output_per_mtok", "cache_read_per_mtok", "cache_write_per_mtok"]
)
def test_a_price_that_is_not_finite_or_beyond_the_bound_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], field: str, value: str
) -> None:
    toml = PRICE.replace(f"{field} = ", "old = ") + f"{field} = {value}\n"
    toml = "\n".join(line for line in toml.splitlines() if not line.startswith("old = "))
    code, out, err = check(tmp_path, toml, capsys)
    assert code == 2, out
    assert f"prices.m.{field}: " in err
    assert f"(in {tmp_path / 'driftline.toml'})" in err


def test_prices_at_the_bounds_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    toml = f"[prices.m]\ninput_per_mtok = 0\noutput_per_mtok = {MAX_PRICE_PER_MTOK}\n"
    code, out, err = check(tmp_path, toml, capsys)
    assert code == 0, err
    assert json.loads(out.split("\n", 1)[1])["prices"]["m"]["output_per_mtok"] == 1e6


def test_a_price_override_from_the_environment_is_checked_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRIFTLINE_PRICES", '{"m": {"input_per_mtok": 1e400, "output_per_mtok": 1}}')
    with pytest.raises(ConfigError, match=r"prices\.m\.input_per_mtok: .*DRIFTLINE_PRICES\)"):
        load_settings()
    monkeypatch.delenv("DRIFTLINE_PRICES")
    with pytest.raises(ConfigError, match=r"prices\.m\.output_per_mtok: .*finite"):
        load_settings(prices={"m": {"input_per_mtok": 1, "output_per_mtok": float("nan")}})


@pytest.mark.parametrize("value", ["inf", "nan", "0", "-5"])
@pytest.mark.parametrize(
    "table", ["workflows.w.budgets", "workflows.w.tenants.t", 'workflows."*".routes.r']
)
@pytest.mark.parametrize("field", ["cost_usd_per_window", "monthly_cost_usd", "window_s"])
def test_a_budget_amount_that_is_not_finite_and_positive_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], table: str, field: str, value: str
) -> None:
    code, out, err = check(tmp_path, f"[{table}]\n{field} = {value}\n", capsys)
    assert code == 2, out
    assert f"{table.replace(chr(34), '')}.{field}: " in err
    assert "(in " in err
