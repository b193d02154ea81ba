"""Broken or hostile arguments and files through the CLI: a clear error, exit 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from driftline.cli import main
from driftline.config import MAX_CONFIG_BYTES
from driftline.detectors import BurnRate

ROOT = Path(__file__).resolve().parents[2]


def _exit_code(argv: list[str]) -> int:
    """``main``'s return, or argparse's exit status."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"[workflows.w.budgets]\nmonthly_cost_usd = 1e-320\n", "greater than or equal"),
        (b'a = "\xff"\n', "not UTF-8 text"),
        (b"a = " + b"[" * 3000 + b"]" * 3000 + b"\n", "nested too deeply"),
        (b"# " + b"x" * MAX_CONFIG_BYTES + b"\n", "larger than"),
    ],
)
def test_a_broken_config_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, why: str
) -> None:
    config = tmp_path / "driftline.toml"
    config.write_bytes(content)
    assert _exit_code(["--config", str(config), "config", "check"]) == 2
    assert why in capsys.readouterr().err


def test_a_directory_as_config_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _exit_code(["--config", str(tmp_path), "config", "check"]) == 2
    assert "unreadable" in capsys.readouterr().err


def test_a_monthly_budget_too_small_to_divide_is_refused() -> None:
    # 1e-320 USD passed the config once and divided by zero in the detectors.
    with pytest.raises(ValueError, match="at least"):
        BurnRate(monthly_budget=1e-320)


@pytest.mark.parametrize(
    "argv",
    [
        [""],
        ["x\udcff"],
        ["x' OR 1=1; DROP TABLE llm_alerts --"],
        ["a" * 100_000],
        ["a\x1b[31mb"],
        ["chat", "--bundle", ""],
        ["chat", "--bundle", "'; DROP"],
    ],
)
def test_baseline_accept_refuses_names_no_span_can_have(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # Refused before Kafka is asked (the port is closed): exit 2, the value not echoed.
    code = _exit_code(["baseline", "accept", *argv, "--bootstrap-servers", "127.0.0.1:1"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "\x1b" not in err and "DROP" not in err and len(err) < 1000


@pytest.mark.parametrize("interval", ["nan", "inf", "-1", "0"])
def test_status_refuses_an_interval_that_is_no_duration(
    interval: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["status", "--interval", interval, "--worker", "http://127.0.0.1:1"]
    assert _exit_code(argv) == 2
    assert "--interval" in capsys.readouterr().err


def test_status_does_not_print_a_password_in_a_worker_url(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _exit_code(["status", "--once", "--worker", "http://ops:S3CRETPW@127.0.0.1:1/"]) == 1
    out = capsys.readouterr()
    assert "S3CRETPW" not in out.out + out.err
    assert "http://127.0.0.1:1" in out.out


def test_report_refuses_an_empty_output_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert _exit_code(["report", "--out", "", "--store", f"chdb://{tmp_path}/s"]) == 2
    assert list(tmp_path.iterdir()) == []


def test_doctor_refuses_a_negative_lag() -> None:
    assert _exit_code(["doctor", "--max-lag", "-5"]) == 2


def test_normalize_says_at_once_when_the_traces_file_cannot_be_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spans = tmp_path / "spans.json"
    spans.write_text('{"resourceSpans": []}')
    assert _exit_code(["normalize", str(spans), "--traces", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


@pytest.mark.parametrize(("reader_closed", "expected"), [(True, "True"), (False, "False")])
def test_only_stdout_whose_reader_went_away_counts_as_gone(
    reader_closed: bool, expected: str
) -> None:
    # A broken pipe elsewhere (a store's socket, a --traces FIFO) stays the command's failure.
    script = (
        "import os, sys; r, w = os.pipe(); os.dup2(w, 1)\n"
        + ("os.close(r)\n" if reader_closed else "")
        + "from driftline.cli import _stdout_reader_gone\n"
        "sys.stderr.write(str(_stdout_reader_gone()))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.stderr.strip().endswith(expected), done.stderr


@pytest.mark.parametrize(
    "streams",
    [
        "both to a pipe whose reader has gone",  # driftline ... 2>&1 | head -0
        "stderr to a pipe whose reader has gone",  # driftline ... 2> >(head -0)
        "stderr closed, stdout to a pipe whose reader has gone",  # 2>&- | head -0
    ],
)
def test_an_error_message_nobody_reads_keeps_the_failure_status(
    tmp_path: Path, streams: str
) -> None:
    # The message of a failing command hits a broken (or no) stderr: the command still ends
    # with its own exit status (2 here), not 0 as if the reader of its output had gone.
    reader, writer = os.pipe()
    os.close(reader)  # no reader: every write to the pipe fails with EPIPE
    command = [sys.executable, "-m", "driftline.cli", "sql", "no_such_query"]
    stdout: int | None = writer
    if streams.startswith("stderr closed"):
        command = ["/bin/sh", "-c", 'exec "$0" "$@" 2>&-', *command]
    elif streams.startswith("stderr to"):
        stdout = subprocess.DEVNULL
    try:
        done = subprocess.run(
            command,
            stdout=stdout,
            stderr=writer,
            cwd=tmp_path,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    finally:
        os.close(writer)
    assert done.returncode == 2


@pytest.mark.parametrize("worker", ["user:S3CRETPW@:9464", "ops:S3CRETPW@"])
def test_a_refused_worker_url_is_not_echoed_with_its_password(
    worker: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _exit_code(["status", "--once", "--worker", worker]) == 2
    assert "S3CRETPW" not in capsys.readouterr().err


def test_normalize_writes_traces_to_an_existing_device(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spans = tmp_path / "spans.json"
    spans.write_text('{"resourceSpans": []}')
    assert _exit_code(["normalize", str(spans), "--traces", "/dev/null"]) == 0


def test_sql_refuses_an_integer_parameter_its_type_cannot_hold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The embedded engine wrapped it (999999 as UInt8 read as 63); a server refuses it.
    url = f"chdb://{tmp_path / 'db'}"
    assert _exit_code(["sql", "SELECT 1", "--write", "--store", url]) == 0
    query = "SELECT {x:UInt8} AS x"
    assert _exit_code(["sql", query, "--param", "x=999999", "--store", url]) == 2
    assert "outside UInt8" in capsys.readouterr().err
    assert _exit_code(["sql", query, "--param", "x=200", "--store", url]) == 0


def test_a_control_record_names_its_requester_in_printable_text() -> None:
    from driftline.streams.monitor.control import ControlError, accept_baseline_message

    assert accept_baseline_message("chat", None, None, 5, "ops oncall")
    with pytest.raises(ControlError, match="requested_by"):
        accept_baseline_message("chat", None, None, 5, "\x1b[31mEVIL\u202e\n")


def test_load_names_a_directory_given_as_its_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _exit_code(["load", str(tmp_path), "--store", f"chdb://{tmp_path}/s"]) == 2
    assert "a directory, not a file" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
