"""The embedded backend: a chdb session on a local directory.

chdb runs one embedded engine per process, bound to one data path: opening a second path
while the first is open fails. Stores on the same path share one session (reference-counted);
the session closes with the last of them, after which another path may be opened.
"""

from __future__ import annotations

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


def _acquire(path: Path) -> chdb_session.Session:
    with _lock:
        if path in _open:
            session, count = _open[path]
            _open[path] = (session, count + 1)
            return session
        if _open:
            other = next(iter(_open))
            raise ChdbPathInUseError(
                f"chdb can open one data path per process; {other} is open, {path} was asked for. "
                "Close the other store first or use the same path."
            )
        path.mkdir(parents=True, exist_ok=True)
        session = chdb_session.Session(str(path))
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
