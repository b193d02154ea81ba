"""``driftline sql``: library queries by name, parameters, read-only by default.

Runs the CLI in a subprocess: chdb allows one store path per process, and the rest of the
suite holds its own.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def driftline(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "driftline.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )


def new_store(directory: Path) -> str:
    """A store with the schema: reading runs never create one."""
    store = f"chdb://{directory / 'db'}"
    created = driftline("sql", "SELECT 1", "--write", "--store", store, cwd=directory)
    assert created.returncode == 0, created.stderr
    return store


def test_named_query_defaults_and_missing_parameters(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    done = driftline(
        "sql",
        "rollup_tenant_daily",
        "--store",
        store,
        "--format",
        "json",
        "--param",
        "from=2026-11-01 00:00:00",
        "--param",
        "to=2026-11-02 00:00:00",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout or "[]") == []

    missing = driftline("sql", "cost_by_workflow", "--store", store, cwd=tmp_path)
    assert missing.returncode == 2
    assert "--param from=..." in missing.stderr and "--param to=..." in missing.stderr


def test_writes_need_the_flag(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    refused = driftline(
        "sql", "DROP TABLE driftline.llm_traces_raw", "--store", store, cwd=tmp_path
    )
    assert refused.returncode == 2
    assert "--write" in refused.stderr


@pytest.fixture(scope="module")
def guarded_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A store with one row in ``default.kept``, and a local file no query may read."""
    directory = tmp_path_factory.mktemp("sql")
    store = f"chdb://{directory / 'db'}"
    for statement in (
        "CREATE TABLE default.kept (x Int32) ENGINE = MergeTree ORDER BY x",
        "INSERT INTO default.kept VALUES (1)",
    ):
        done = driftline("sql", statement, "--store", store, "--write", cwd=directory)
        assert done.returncode == 0, done.stderr
    (directory / "secret.txt").write_text("local secret\n")
    return store, directory


# Each must fail without --write; the engine, not a look at the text, refuses them.
WRITES = [
    "SELECT 1; DROP TABLE default.kept",
    "SELECT 1; TRUNCATE TABLE default.kept",
    "SELECT ';'; INSERT INTO default.kept VALUES (2)",
    "TRUNCATE TABLE default.kept",
    "WITH x AS (SELECT 2 AS x) INSERT INTO default.kept SELECT x FROM x",
    "ALTER TABLE default.kept DELETE WHERE 1",
    "SET readonly = 0",
]
READS_OUTSIDE = [
    "SELECT * FROM file('{dir}/secret.txt', 'LineAsString')",
    "SELECT file('{dir}/secret.txt')",
    "SELECT x FROM default.kept WHERE toString(x) NOT IN "
    "(SELECT * FROM file('{dir}/secret.txt', 'LineAsString'))",
    "SELECT * FROM url('file://{dir}/secret.txt', 'LineAsString')",
    "SELECT * FROM url('http://127.0.0.1:9/x.csv', 'CSV', 'a String')",
    "SELECT * FROM s3('http://127.0.0.1:9/bucket/x.csv', 'CSV', 'a String')",
    "SELECT * FROM remote('127.0.0.1:9', system.one)",
    "SELECT x FROM default.kept INTO OUTFILE '{dir}/out.csv'",
    "SELECT x FROM default.kept FORMAT CSV",
    "SHOW TABLES FROM default",
]


def run_sql(store: str, directory: Path, query: str) -> subprocess.CompletedProcess[str]:
    return driftline("sql", query.format(dir=directory), "--store", store, cwd=directory)


@pytest.mark.parametrize("attack", WRITES)
def test_without_write_nothing_changes(guarded_store: tuple[str, Path], attack: str) -> None:
    store, directory = guarded_store
    assert run_sql(store, directory, attack).returncode != 0
    rows = driftline(
        "sql",
        "SELECT count() AS n, sum(x) AS s FROM default.kept",
        "--store",
        store,
        "--format",
        "json",
        cwd=directory,
    )
    assert rows.returncode == 0, rows.stderr
    assert json.loads(rows.stdout) == {"n": 1, "s": 1}


@pytest.mark.parametrize("attack", READS_OUTSIDE)
def test_without_write_nothing_outside_the_store_is_read_or_written(
    guarded_store: tuple[str, Path], attack: str
) -> None:
    store, directory = guarded_store
    done = run_sql(store, directory, attack)
    assert done.returncode != 0, done.stdout
    assert "local secret" not in done.stdout + done.stderr
    assert not (directory / "out.csv").exists()


@pytest.mark.parametrize(
    "query",
    [
        "SELECT ';' AS semicolon, x FROM default.kept",
        "-- a comment; with a semicolon\nSELECT x FROM default.kept",
        "WITH 1 AS one SELECT x * one AS x FROM default.kept",
        "SELECT count() AS x FROM numbers(1)",
        "(SELECT x FROM default.kept) UNION ALL (SELECT 1 AS x)",
    ],
)
def test_reading_queries_still_run(guarded_store: tuple[str, Path], query: str) -> None:
    store, directory = guarded_store
    done = driftline("sql", query, "--store", store, "--format", "csv", cwd=directory)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1].endswith("1")


def test_a_misspelled_query_name_gets_suggestions_not_an_invitation_to_write(
    tmp_path: Path,
) -> None:
    done = driftline("sql", "cost_by_workfow", "--store", f"chdb://{tmp_path}/db", cwd=tmp_path)
    assert done.returncode == 2
    assert "did you mean cost_by_workflow?" in done.stderr
    assert "sql --list" in done.stderr and "--write" not in done.stderr
    assert not (tmp_path / "db").exists()


def test_list_names_every_library_query_with_its_parameters(tmp_path: Path) -> None:
    from driftline.store.queries import query_names

    done = driftline("sql", "--list", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    listed = [line.split()[0] for line in done.stdout.splitlines()]
    assert listed == query_names()
    cost = next(line for line in done.stdout.splitlines() if line.startswith("cost_by_workflow "))
    assert "from to" in cost


@pytest.mark.parametrize(
    ("query", "params"),
    [
        ("cost_by_workflow", ("from=2026-01-01 00:00:00", "to=2026-01-02", "form=2026-01-01")),
        ("SELECT {a:UInt8}", ("a=1", "form=2")),
    ],
)
def test_unknown_param_names_are_errors(
    tmp_path: Path, query: str, params: tuple[str, ...]
) -> None:
    flags = [arg for p in params for arg in ("--param", p)]
    done = driftline("sql", query, *flags, "--store", f"chdb://{tmp_path}/db", cwd=tmp_path)
    assert done.returncode == 2
    assert "driftline sql: --param form: the query has no such placeholder" in done.stderr
    assert not (tmp_path / "db").exists()


def test_help_names_the_reader_store_and_the_exit_codes(tmp_path: Path) -> None:
    done = driftline("sql", "--help", cwd=tmp_path)
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "store.reader_url when set" in text
    assert "exit codes: 0" in text and " 2 could not run" in text


def _no_constants(name: str) -> None:
    raise AssertionError(f"{name} is not JSON")


def test_json_prints_null_for_nan_and_infinities(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    query = "SELECT 0/0 AS a, 1/0 AS b, -1/0 AS c, [1/0, 2.5] AS d, map('k', 0/0) AS m, 1.5 AS e"
    done = driftline("sql", query, "--store", store, "--format", "json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout, parse_constant=_no_constants)
    assert row == {"a": None, "b": None, "c": None, "d": [None, 2.5], "m": [["k", None]], "e": 1.5}
    help_text = " ".join(driftline("sql", "--help", cwd=tmp_path).stdout.split())
    assert "NaN and infinities are null" in help_text


# A stored value as a span could carry it: a title change (OSC), a screen clear (CSI), DEL, a
# C1 CSI (U+009B), a tab and a newline.
HOSTILE = "a\x1b]0;title\x07b\x1b[2Jc\x7fd\x9be\tf\ng"
HOSTILE_SQL = (
    "concat('a', char(27), ']0;title', char(7), 'b', char(27), '[2Jc', char(127), 'd', "
    "unhex('C29B'), 'e', char(9), 'f', char(10), 'g')"
)
ESCAPED = r"a\x1b]0;title\x07b\x1b[2Jc\x7fd\x9be\x09f\x0ag"


def test_control_characters_in_stored_text_are_escaped(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    for statement in (
        "CREATE TABLE default.spans (v String) ENGINE = MergeTree ORDER BY v",
        f"INSERT INTO default.spans SELECT {HOSTILE_SQL}",
    ):
        done = driftline("sql", statement, "--store", store, "--write", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    query = "SELECT v, [v] AS vs FROM default.spans"
    outputs = {}
    for fmt in ("pretty", "csv", "json"):
        done = driftline("sql", query, "--store", store, "--format", fmt, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        outputs[fmt] = done.stdout
    for fmt in ("pretty", "csv"):
        lines = outputs[fmt].splitlines()
        assert not re.search(r"[\x00-\x1f\x7f-\x9f]", "".join(lines)), (fmt, outputs[fmt])
        assert any(line.startswith(ESCAPED) for line in lines), (fmt, outputs[fmt])
    assert len(outputs["csv"].splitlines()) == 2
    assert json.loads(outputs["json"]) == {"v": HOSTILE, "vs": [HOSTILE]}


@pytest.mark.parametrize(
    "query",
    [
        "SELECT sum(sipHash64(number)) FROM numbers(10000000000) SETTINGS max_execution_time=0.2",
        "SELECT groupArray(number) FROM numbers(10000000) SETTINGS max_memory_usage=1000000",
    ],
)
def test_a_query_failing_at_run_time_exits_1(guarded_store: tuple[str, Path], query: str) -> None:
    store, directory = guarded_store
    done = run_sql(store, directory, query)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("driftline sql: Code: "), done.stderr


def test_csv_text_a_spreadsheet_would_run_as_a_formula_is_quoted_numbers_are_not() -> None:
    # OWASP CSV injection: a stored value (from a span) starting with = + - @ tab or CR is
    # written after a single quote; numbers, negative ones too, stay numbers.
    import csv
    import io
    from decimal import Decimal

    import pyarrow as pa

    from driftline.commands.sql import render

    hostile = ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "\ry", "a=b", None]
    table = pa.table(
        {
            "workflow": hostile,
            "delta": [-1, 2, -3, 4, -5, 6, -7, 8],
            "spend": [-1.5, 0.0, None, 2.5, -0.25, 1.0, 3.0, -4.0],
            "cost": pa.array([Decimal("-1.50")] * 8, pa.decimal128(10, 2)),
            "=-sum": ["ok"] * 8,
        }
    )
    rows = list(csv.reader(io.StringIO(render(table, "csv"))))
    assert rows[0] == ["workflow", "delta", "spend", "cost", "'=-sum"]
    assert [r[0] for r in rows[1:]] == [
        '\'=HYPERLINK("http://x")',
        "'+1+1",
        "'-2+3",
        "'@SUM(A1)",
        "'\\x09x",
        "'\\x0dy",
        "a=b",
        "",
    ]
    assert [r[1] for r in rows[1:]] == ["-1", "2", "-3", "4", "-5", "6", "-7", "8"]
    assert [r[2] for r in rows[1:]] == ["-1.5", "0.0", "", "2.5", "-0.25", "1.0", "3.0", "-4.0"]
    assert {r[3] for r in rows[1:]} == {"-1.50"}


def test_help_says_how_csv_keeps_formulas_from_running(tmp_path: Path) -> None:
    text = " ".join(driftline("sql", "--help", cwd=tmp_path).stdout.split())
    assert "text starting with = + - @ gets a leading '" in text
