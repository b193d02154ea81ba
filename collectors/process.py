"""Supervision of the embedded stack's child processes (broker, collector, worker).

Every child runs in its own process group, so stopping it also stops anything it
spawned, and asks the kernel (``PR_SET_PDEATHSIG``) to kill it when its parent
dies, so a crashed or SIGKILLed ``driftline up`` leaves no orphans. Output goes to
a log file per child; a child that dies while starting fails with the tail of that
log in the error message.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1
LOG_TAIL_CHARS = 2000


class ProcessStartError(RuntimeError):
    """A child process exited or did not become healthy in time."""


class PortInUseError(RuntimeError):
    """A port the stack must listen on is already taken."""


def _die_with_parent() -> None:
    # Runs in the child between fork and exec. The signal fires when the *thread*
    # that forked exits, so children are started from the main thread only.
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def free_port(host: str = "127.0.0.1") -> int:
    """A port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_accepts(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """True when a TCP connection to ``host:port`` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def ensure_port_free(host: str, port: int, setting: str) -> None:
    """Raise :class:`PortInUseError` naming the port and the setting that chose it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise PortInUseError(
                f"port {host}:{port} is already in use (setting {setting}); stop whatever "
                f"listens there or set {setting} to another port (0 picks a free one)"
            ) from exc


class ManagedProcess:
    """One supervised child: started in its own group, stopped with its whole group."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._env = dict(env) if env is not None else None
        self._cwd = cwd
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            try:
                self._popen = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self._env,
                    cwd=self._cwd,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
            except OSError as exc:
                raise ProcessStartError(f"{self.name}: cannot run {self.argv[0]}: {exc}") from exc
        return self

    def poll(self) -> int | None:
        """Exit code if the child has exited, else None."""
        return self._popen.poll() if self._popen is not None else None

    def is_running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return ""
        return data[-chars:].decode(errors="replace")

    def wait_until(self, check: Callable[[], bool], what: str, timeout_s: float) -> float:
        """Poll ``check`` until true; returns seconds waited. Fails fast if the child exits."""
        started = time.monotonic()
        delay = 0.02
        while True:
            code = self.poll()
            if code is not None:
                raise ProcessStartError(
                    f"{self.name} exited with code {code} before {what}; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            if check():
                return time.monotonic() - started
            if time.monotonic() - started > timeout_s:
                raise ProcessStartError(
                    f"{self.name} did not become ready ({what}) within {timeout_s:.0f}s "
                    f"(embedded.start_timeout_s); log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM the child's process group, SIGKILL it after ``timeout_s``; returns exit code."""
        popen = self._popen
        if popen is None:
            return None
        if popen.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                popen.wait(timeout=5.0)
        # Grandchildren that ignored SIGTERM still share the group: make sure they are gone.
        self._signal_group(signal.SIGKILL)
        return popen.returncode

    def _signal_group(self, signum: int) -> None:
        assert self._popen is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._popen.pid, signum)

    def __repr__(self) -> str:
        return f"<ManagedProcess {self.name} pid={self.pid}>"
