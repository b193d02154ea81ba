"""The embedded backend: a chdb session on a local directory.

chdb runs one embedded engine per process, bound to one data path: opening a second path
while the first is open fails. Stores on the same path share one session (reference-counted);
the session closes with the last of them, after which another path may be opened.

A data path is also held by one process at a time: the engine takes an exclusive ``flock`` on
``<path>/status`` (which records the holder's PID). Opening a path another process holds
raises :class:`StoreInUseError` instead of chdb's "Error initializing EmbeddedServer".
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
from chdb import session as chdb_session

from driftline.store.base import (
    SkipExisting,
    Store,
    StoreError,
    error_from_message,
    format_params,
    insert_statement,
)

_lock = threading.Lock()
_open: dict[Path, tuple[chdb_session.Session, int]] = {}


class ChdbPathInUseError(StoreError):
    """This process already has a chdb session on another path."""


class StoreInUseError(StoreError):
    """Another process (a running ``driftline up``, ``demo`` or ``worker``) holds the path."""


def held_by_another_process(path: Path) -> str | None:
    """What ``<path>/status`` says about the process holding ``path``, or None if it is free.

    Probes the engine's lock without keeping it: a free path stays free.
    """
    status = path / "status"
    try:
        fd = os.open(status, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):  # removed by a clean shutdown; a new path
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode(errors="replace")
            return ", ".join(line.strip() for line in holder.splitlines() if line.strip())
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _in_use(path: Path, holder: str) -> StoreInUseError:
    return StoreInUseError(
        f"the store at {path} is in use by another driftline process ({holder or 'PID unknown'})"
        ", for example a running `driftline up`, `driftline demo` or `driftline worker`. An "
        "embedded (chdb) store can be open in one process at a time: stop that process first, "
        "or point this command at another store (--store chdb:///other/path), or serve the data "
        "from a ClickHouse server (store.url = clickhouse://...) that several processes can share."
    )


def _acquire(path: Path) -> chdb_session.Session:
    with _lock:
        if path in _open:
            session, count = _open[path]
            _open[path] = (session, count + 1)
            return session
        holder = held_by_another_process(path)
        if holder is not None:
            raise _in_use(path, holder)
        if _open:
            other = next(iter(_open))
            raise ChdbPathInUseError(
                f"chdb can open one data path per process; {other} is open, {path} was asked for. "
                "Close the other store first or use the same path."
            )
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file in the way, no permission, a read-only file system
            why = "a file is there" if path.exists() else exc.strerror
            raise StoreError(f"cannot use {path} as a store directory: {why}") from exc
        try:
            session = chdb_session.Session(str(path))
        except RuntimeError as exc:
            holder = held_by_another_process(path)  # it may have started since the check above
            if holder is not None:
                raise _in_use(path, holder) from exc
            raise StoreError(f"chdb could not open the store at {path}: {exc}") from exc
        _open[path] = (session, 1)
        return session


def _release(path: Path) -> None:
    with _lock:
        session, count = _open[path]
        if count > 1:
            _open[path] = (session, count - 1)
            return
        del _open[path]
        session.close()


class ChdbStore(Store):
    """A store in a local directory, run in this process by chdb."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).resolve()
        self.url = f"chdb://{self.path}"
        self._session: chdb_session.Session | None = _acquire(self.path)

    @property
    def session(self) -> chdb_session.Session:
        """The shared chdb session (for serving it over HTTP in tests)."""
        return self._live()

    def _live(self) -> chdb_session.Session:
        if self._session is None:
            raise StoreError(f"the store at {self.path} is closed")
        return self._session

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        try:
            result = self._live().query(sql, "ArrowTable", params=format_params(params) or None)
        except StoreError:
            raise
        except Exception as exc:
            raise error_from_message(str(exc)) from exc
        assert isinstance(result, pa.Table)
        return result

    def command(self, sql: str) -> None:
        try:
            self._live().query(sql)
        except StoreError:
            raise
        except Exception as exc:
            raise error_from_message(str(exc)) from exc

    def insert_arrow(
        self,
        table_name: str,
        data: pa.Table,
        dedup_token: str | None = None,
        *,
        skip_existing: SkipExisting | None = None,
    ) -> None:
        if data.num_rows == 0:
            return
        # chdb's Python() table function reads the local variable named `batch` from this frame.
        batch = data  # noqa: F841
        sql = insert_statement(
            table_name, data.column_names, "Python(batch)", data, dedup_token, skip_existing
        )
        self.command(sql)

    def close(self) -> None:
        if self._session is not None:
            self._session = None
            _release(self.path)
