"""Reading commands leave a store exactly as they found it, and never create one.

``report`` and ``sql`` (without ``--write``) under the default configuration once lowered a
store's 365-day TTL to the default 90 days on open. Each test compares ``SHOW CREATE TABLE``
of every table in the store, read by a process that connects without touching the schema,
before and after the command. Commands run in subprocesses: chdb allows one path per process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOT = """
import json, sys
from driftline.store import connect
store = connect(sys.argv[1])
names = store.query("SELECT name FROM system.tables WHERE database = 'driftline' ORDER BY name")
ddl = {n: store.query(f"SHOW CREATE TABLE driftline.`{n}`").column(0)[0].as_py()
       for n in names.column(0).to_pylist()}
print(json.dumps(ddl))
"""


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", **(env or {})},
    )


def driftline(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run("-m", "driftline.cli", *args, cwd=cwd, env=env)


def schema(url: str, cwd: Path) -> dict[str, str]:
    done = run("-c", SNAPSHOT, url, cwd=cwd)
    assert done.returncode == 0, done.stderr
    ddl: dict[str, str] = json.loads(done.stdout)
    return ddl


@pytest.fixture()
def year_store(tmp_path: Path) -> str:
    """A store created with a 365-day retention, then used with the default configuration."""
    url = f"chdb://{tmp_path / 'db'}"
    created = driftline(
        "sql",
        "SELECT 1",
        "--write",
        "--store",
        url,
        cwd=tmp_path,
        env={"DRIFTLINE_STORE__TTL_DAYS": "365"},
    )
    assert created.returncode == 0, created.stderr
    ddl = schema(url, tmp_path)
    assert len(ddl) > 10 and "toIntervalDay(365)" in ddl["llm_requests_raw"]
    return url


READING = [
    ("report", "--out", "{dir}/report", "--last", "1h", "--store", "{url}"),
    ("sql", "SELECT count() FROM driftline.llm_requests", "--store", "{url}"),
    (
        "sql",
        "cost_by_workflow",
        "--store",
        "{url}",
        "--param",
        "from=2026-01-01 00:00:00",
        "--param",
        "to=2026-01-02 00:00:00",
    ),
]


@pytest.mark.parametrize("command", READING, ids=lambda c: " ".join(c[:2]))
def test_reading_commands_leave_ddl_and_ttl_unchanged(
    year_store: str, tmp_path: Path, command: tuple[str, ...]
) -> None:
    before = schema(year_store, tmp_path)
    done = driftline(*(a.format(dir=tmp_path, url=year_store) for a in command), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert schema(year_store, tmp_path) == before


def test_a_write_command_keeps_a_chosen_retention_unless_the_config_sets_one(
    year_store: str, tmp_path: Path
) -> None:
    events = tmp_path / "events.ndjson"
    events.write_text("")
    before = schema(year_store, tmp_path)
    done = driftline("load", str(events), "--store", year_store, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert schema(year_store, tmp_path) == before  # default ttl_days: not applied

    explicit = driftline(
        "load",
        str(events),
        "--store",
        year_store,
        cwd=tmp_path,
        env={"DRIFTLINE_STORE__TTL_DAYS": "30"},
    )
    assert explicit.returncode == 0, explicit.stderr
    after = schema(year_store, tmp_path)
    assert "toIntervalDay(30)" in after["llm_requests_raw"]
    assert "toIntervalDay(365)" not in json.dumps(after)


@pytest.mark.parametrize("command", READING, ids=lambda c: " ".join(c[:2]))
def test_reading_commands_refuse_a_missing_store_and_create_none(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    missing = tmp_path / "no-such-store"
    url = f"chdb://{missing}"
    done = driftline(*(a.format(dir=tmp_path, url=url) for a in command), cwd=tmp_path)
    assert done.returncode == 2
    assert str(missing) in done.stderr and "no store" in done.stderr
    assert not missing.exists()
    assert "(0 rows)" not in done.stdout


def test_reading_commands_refuse_a_directory_without_a_store(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    done = driftline("sql", "SELECT 1", "--store", f"chdb://{empty}", cwd=tmp_path)
    assert done.returncode == 2
    assert "no store at" in done.stderr
    assert list(empty.iterdir()) == []  # the engine was not even started on it


@pytest.mark.parametrize(
    ("command", "words"),
    [
        (("sql", "SELECT 1", "--store", "chdb://"), "give a path"),
        (("sql", "SELECT 1", "--store", "foo://x"), "must start with chdb://"),
        (("sql", "SELECT 1", "--store", "chdb://{dir}/a-file"), "no store at"),
        (("load", "{dir}/none.ndjson", "--store", "chdb://{dir}/a-file"), "a file is there"),
        (("load", "{dir}/none.ndjson", "--store", "chdb://"), "give a path"),
        (("replay", "{dir}/none.ndjson", "--store", "chdb://{dir}/a-file"), "a file is there"),
    ],
    ids=["sql-empty-path", "sql-scheme", "sql-file", "load-file", "load-empty-path", "replay-file"],
)
def test_an_unusable_store_url_is_one_line_of_error_not_a_traceback(
    tmp_path: Path, command: tuple[str, ...], words: str
) -> None:
    (tmp_path / "a-file").write_text("not a store")
    (tmp_path / "none.ndjson").write_text("")
    done = driftline(*(a.format(dir=tmp_path) for a in command), cwd=tmp_path)
    assert done.returncode != 0
    assert words in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert (tmp_path / "a-file").read_text() == "not a store"


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("clickhouse://u@127.0.0.1:99999/driftline", "not a server URL"),
        ("clickhouse://u@127.0.0.1:notaport/driftline", "not a server URL"),
        ("clickhouse://u@[::1/driftline", "not a server URL"),
        ("clickhouse://u@127.0.0.1:1/driftline?password=chpass-SECRET", "query parameter"),
        ("clickhouse://u@127.0.0.1:1/other?access_token=chpass-SECRET", "query parameter"),
        ("clickhouse://S3CR3T_token@127.0.0.1:1/driftline", "looks like a token"),
    ],
    ids=["port-range", "port-text", "ipv6", "password-param", "token-param", "token-user"],
)
def test_a_server_url_given_on_the_command_line_is_checked_like_the_configured_one(
    tmp_path: Path, url: str, words: str
) -> None:
    done = driftline("sql", "SELECT 1", "--store", url, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert words in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert "SECRET" not in done.stderr + done.stdout


def test_a_writing_command_that_shortens_retention_says_so(year_store: str, tmp_path: Path) -> None:
    (tmp_path / "empty.ndjson").write_text("")
    env = {"DRIFTLINE_STORE__TTL_DAYS": "1"}
    done = driftline("load", "empty.ndjson", "--store", year_store, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert "store retention set to 1 days on" in done.stderr
    assert "(was 365 days)" in done.stderr
    assert "toIntervalDay(1)" in schema(year_store, tmp_path)["llm_requests_raw"]
