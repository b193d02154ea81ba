"""Each configuration mistake an operator makes fails ``config check`` naming the field and
where its value came from, and the worker refuses to start on the same findings."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.cli import main
from driftline.config import ConfigError, check_env_name, load_settings

SECRET_VARIABLES = (
    "PAGERDUTY_ROUTING_KEY",
    "PD_KEY_TEAM",
    "CLICKHOUSE_PASSWORD",
    "CLICKHOUSE_READER_PASSWORD",
    "DRIFTLINE_KAFKA_SASL_PASSWORD",
    "SLACK_WEBHOOK_URL",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("DRIFTLINE_") or name in SECRET_VARIABLES:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def check(tmp_path: Path, toml: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    path = tmp_path / "driftline.toml"
    path.write_text(toml)
    code = main(["--config", str(path), "config", "check"])
    return code, capsys.readouterr().err


PAGERDUTY_ROUTE = '[[pagerduty.routes]]\nrouting_key_env = "PD_KEY_TEAM"\n'


def test_a_route_without_its_secret_fails_the_check_and_the_worker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, err = check(tmp_path, PAGERDUTY_ROUTE, capsys)
    assert code == 2
    assert "pagerduty.routes[0].routing_key_env: PD_KEY_TEAM is not set" in err
    assert main(["--config", str(tmp_path / "driftline.toml"), "worker"]) == 2
    assert "PD_KEY_TEAM is not set" in capsys.readouterr().err

    monkeypatch.setenv("PD_KEY_TEAM", "0123456789abcdef0123456789abcdef")
    code, err = check(tmp_path, PAGERDUTY_ROUTE, capsys)
    assert code == 0, err
    assert "0123456789abcdef" not in capsys.readouterr().out + err


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        (
            '[[pagerduty.routes]]\nkind = "webhook"\nrouting_key_env = "SLACK_WEBHOOK_URL"\n',
            "pagerduty.routes[0].routing_key_env: SLACK_WEBHOOK_URL is not set",
        ),
        (
            '[kafka]\nsecurity_protocol = "SASL_SSL"\nsasl_mechanism = "PLAIN"\n',
            "kafka.sasl_password_env: DRIFTLINE_KAFKA_SASL_PASSWORD is not set",
        ),
        (
            '[store]\nurl = "clickhouse://driftline_writer@ch:8123/driftline"\n',
            "store.password_env: CLICKHOUSE_PASSWORD is not set",
        ),
        (
            '[store]\nreader_url = "clickhouse://driftline_reader@ch:8123/driftline"\n',
            "store.reader_password_env: CLICKHOUSE_READER_PASSWORD is not set",
        ),
    ],
)
def test_every_missing_secret_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], toml: str, expected: str
) -> None:
    code, err = check(tmp_path, toml, capsys)
    assert code == 2
    assert expected in err


def test_no_routes_and_no_key_is_a_warning_not_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = check(tmp_path, "", capsys)
    assert code == 0
    assert "warning: pagerduty.routes: none configured and PAGERDUTY_ROUTING_KEY is not set" in err


PAGERDUTY_KEYS = [
    "e93facc04764012d7bfb002500d5d1a6",  # integration key: lowercase hex
    "R0ABCDEFGHIJ1234567890KLMNOPQRST",  # routing key: 32 uppercase letters and digits
]


@pytest.mark.parametrize("key", PAGERDUTY_KEYS)
@pytest.mark.parametrize(
    "field",
    [
        "[[pagerduty.routes]]\nrouting_key_env",
        "[store]\npassword_env",
        "[store]\nreader_password_env",
        "[kafka]\nsasl_password_env",
    ],
)
def test_a_secret_pasted_where_a_variable_name_belongs_is_refused_unprinted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str, field: str
) -> None:
    code, err = check(tmp_path, f'{field} = "{key}"\n', capsys)
    assert code == 2
    assert "must name an environment variable" in err
    assert key not in err and key[:8] not in err


def test_the_value_of_a_variable_is_refused_as_a_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAGERDUTY_ROUTING_KEY", "ROUTINGKEY")
    with pytest.raises(ValueError, match="must name an environment variable"):
        check_env_name("ROUTINGKEY")
    assert check_env_name("PAGERDUTY_ROUTING_KEY") == "PAGERDUTY_ROUTING_KEY"


def _refusal_text() -> str:
    try:
        check_env_name("not a name", environ={})
    except ValueError as exc:
        return str(exc)
    raise AssertionError("a value with spaces was taken for a variable name")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_a_refusal_never_contains_the_value(value: str) -> None:
    # The refusal is one fixed text whatever was pasted, so it cannot echo any part of it
    # (a value that happens to be a word of that text, like "from", is not an echo).
    try:
        check_env_name(value, environ={})
    except ValueError as exc:
        assert str(exc) == _refusal_text()


def test_workflow_defaults_merge_under_each_named_workflow(tmp_path: Path) -> None:
    path = tmp_path / "driftline.toml"
    path.write_text(
        '[workflows."*"]\nallowed_models = ["gpt-4o"]\n'
        '[workflows."*".budgets]\nmax_tokens_per_request = 1000\nmax_loop_depth = 5\n'
        "[workflows.chat.budgets]\nmax_tokens_per_request = 50\n"
    )
    workflows = load_settings(path).workflows
    assert workflows["chat"].budgets.max_tokens_per_request == 50
    assert workflows["chat"].budgets.max_loop_depth == 5
    assert workflows["chat"].allowed_models == ["gpt-4o"]
    assert workflows["*"].budgets.max_tokens_per_request == 1000


def test_a_workflow_glob_is_refused_because_it_would_match_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = check(tmp_path, '[workflows."support-*"]\nallowed_models = ["x"]\n', capsys)
    assert code == 2
    assert "workflows.support-*: workflow names are matched exactly" in err


def test_every_error_is_reported_one_per_line_with_control_characters_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = check(
        tmp_path,
        '[workflows."support-*"]\n[workflows."chat?"]\n'
        '[workflows."\\u001bcbot".budgets]\nmax_tokens_per_request = 0\n'
        "[detectors]\nwarmup_events = 1\n[kafka]\npartitions = 0\n",
        capsys,
    )
    assert code == 2
    assert "\x1b" not in err
    lines = err.splitlines()
    assert lines[0].startswith("invalid configuration (")
    expected = [
        "  workflows.support-*: workflow names are matched exactly",
        "  workflows.chat?: workflow names are matched exactly",
        "  workflows.\\x1bcbot.budgets.max_tokens_per_request: Input should be greater than 0",
        "  detectors.warmup_events: Input should be greater than or equal to 20",
        "  kafka.partitions: Input should be greater than or equal to 1",
    ]
    for start in expected:
        assert sum(line.startswith(start) for line in lines) == 1, (start, err)
    assert len(lines) == 1 + len(expected), err


def test_a_workflow_key_with_an_escape_sequence_is_printed_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # ESC c resets the terminal; the key is quoted from the file, so it is shown, not run.
    toml = '[workflows."\\u001bcbot".budgets]\nmax_tokens_per_request = 0\n'
    code, err = check(tmp_path, toml, capsys)
    assert code == 2
    assert "\x1b" not in err
    assert "  workflows.\\x1bcbot.budgets.max_tokens_per_request: Input should be" in err


@pytest.mark.parametrize(
    "command",
    [
        ["sql", "SELECT 1"],
        ["doctor"],
        ["dashboards", "build", "--out", "{tmp}"],
        ["worker"],
        ["baseline", "accept", "w"],
    ],
)
def test_every_command_prints_a_bad_key_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    # Not only config check: each command refuses the file and quotes the key from it.
    config = tmp_path / "driftline.toml"
    config.write_text('[workflows."\\u001bcbot".budgets]\nmax_tokens_per_request = 0\n')
    arguments = [a.format(tmp=tmp_path / "out") for a in command]
    assert main(["--config", str(config), *arguments]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err
    assert "workflows.\\x1bcbot.budgets.max_tokens_per_request" in err


def test_a_misspelled_metric_fails_the_check_and_replay_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = check(tmp_path, '[detectors]\nenabled_metrics = ["ouput_tokens"]\n', capsys)
    assert code == 2
    assert (
        "detectors.enabled_metrics: no metric 'ouput_tokens' (did you mean output_tokens?)" in err
    )
    events = tmp_path / "events.ndjson"
    events.write_text("")
    assert main(["--config", str(tmp_path / "driftline.toml"), "replay", str(events)]) == 2
    assert "no metric 'ouput_tokens'" in capsys.readouterr().err


def test_an_empty_metric_list_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = check(tmp_path, "[detectors]\nenabled_metrics = []\n", capsys)
    assert code == 2
    assert "detectors.enabled_metrics: an empty list would turn drift detection off" in err
    assert f"(in {tmp_path / 'driftline.toml'})" in err


def test_an_environment_error_names_the_variable_not_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRIFTLINE_STORE__TTL_DAYS", "0")
    code, err = check(tmp_path, "[kafka]\npartitions = 0\n", capsys)
    assert code == 2
    assert "store.ttl_days: " in err and "(from the environment, DRIFTLINE_STORE__TTL_DAYS)" in err
    assert f"kafka.partitions: Input should be greater than or equal to 1 (in {tmp_path}" in err


def test_a_misspelled_environment_section_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRIFTLINE_KAFAK__BOOTSTRAP_SERVERS", "kafka:9092")
    code, err = check(tmp_path, "", capsys)
    assert code == 2
    assert "DRIFTLINE_KAFAK__BOOTSTRAP_SERVERS: no section 'kafak'" in err
    assert "did you mean DRIFTLINE_KAFKA__...?" in err


def test_a_misspelled_environment_key_is_named_with_its_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRIFTLINE_KAFKA__PARTITON", "3")
    with pytest.raises(ConfigError) as info:
        load_settings(None)
    assert "kafka.partiton: Extra inputs are not permitted" in str(info.value)
    assert "DRIFTLINE_KAFKA__PARTITON" in str(info.value)
