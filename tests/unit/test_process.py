"""Process supervision with real child processes: groups, parent death, ports, failures."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from driftline.collectors.process import (
    ManagedProcess,
    PortInUseError,
    ProcessStartError,
    ensure_port_free,
    free_port,
    port_accepts,
)


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def wait_gone(pid: int, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.02)
    return False


def test_stop_ends_the_whole_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    proc = ManagedProcess(
        "shell", ["sh", "-c", f"sleep 60 & echo $! > {pid_file}; wait"], tmp_path / "sh.log"
    ).start()
    proc.wait_until(lambda: pid_file.exists() and pid_file.read_text().strip() != "", "pid", 5)
    grandchild = int(pid_file.read_text())
    assert alive(grandchild)
    proc.stop(timeout_s=5)
    assert wait_gone(grandchild)
    assert not proc.is_running()


def test_child_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('up', flush=True); time.sleep(60)"
    )
    proc = ManagedProcess("stubborn", [sys.executable, "-c", code], tmp_path / "p.log").start()
    proc.wait_until(lambda: "up" in proc.log_tail(), "printing up", 10)
    started = time.monotonic()
    returncode = proc.stop(timeout_s=0.3)
    assert returncode == -signal.SIGKILL
    assert time.monotonic() - started < 5


def test_children_die_with_their_parent(tmp_path: Path) -> None:
    # A supervisor process starts a child through ManagedProcess, then is SIGKILLed:
    # PR_SET_PDEATHSIG must take the child down too.
    supervisor = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from driftline.collectors.process import ManagedProcess
        log = Path({str(tmp_path)!r}) / "c.log"
        child = ManagedProcess("sleeper", ["sleep", "60"], log).start()
        print(child.pid, flush=True)
        time.sleep(60)
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", supervisor],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        assert alive(child_pid)
        parent.kill()
        parent.wait(5)
        assert wait_gone(child_pid), "child outlived its SIGKILLed parent"
    finally:
        parent.kill()


def test_exit_during_start_fails_with_the_log_tail(tmp_path: Path) -> None:
    proc = ManagedProcess(
        "broken", ["sh", "-c", "echo 'bind failed: address in use'; exit 3"], tmp_path / "b.log"
    ).start()
    with pytest.raises(ProcessStartError, match=r"exited with code 3[\s\S]*bind failed"):
        proc.wait_until(lambda: False, "listening", timeout_s=10)


def test_not_ready_in_time_names_the_timeout_setting(tmp_path: Path) -> None:
    proc = ManagedProcess("slow", ["sleep", "30"], tmp_path / "s.log").start()
    try:
        with pytest.raises(ProcessStartError, match=r"embedded\.start_timeout_s"):
            proc.wait_until(lambda: False, "listening", timeout_s=0.2)
    finally:
        proc.stop()


def test_missing_binary_is_a_start_error(tmp_path: Path) -> None:
    with pytest.raises(ProcessStartError, match="cannot run"):
        ManagedProcess("ghost", [str(tmp_path / "no-such-binary")], tmp_path / "g.log").start()


def test_taken_port_names_port_and_setting() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert port_accepts("127.0.0.1", port)
        with pytest.raises(PortInUseError, match=rf"127\.0\.0\.1:{port}.*collector\.grpc_port"):
            ensure_port_free("127.0.0.1", port, "collector.grpc_port")


def test_free_port_is_bindable() -> None:
    port = free_port()
    ensure_port_free("127.0.0.1", port, "embedded.broker_port")
    assert not port_accepts("127.0.0.1", port)


def test_stop_before_start_and_twice_is_harmless(tmp_path: Path) -> None:
    proc = ManagedProcess("idle", ["true"], tmp_path / "i.log")
    assert proc.stop() is None
    proc.start()
    deadline = time.monotonic() + 5
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.stop() == 0
    assert proc.stop() == 0
    assert os.path.exists(tmp_path / "i.log")
