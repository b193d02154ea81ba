"""ClickHouse storage behind one small interface: embedded chdb or a ClickHouse server.

``open_store(url, settings)`` picks the backend from the URL and brings the schema up to date
(``read_only=True``: checks that it is, and changes nothing):

- ``chdb://relative/path`` or ``chdb:///absolute/path``: a chdb session in this process;
- ``clickhouse://user@host:8123/driftline`` (``clickhouses://`` for TLS): a server through
  clickhouse-connect, password from the environment variable named by ``store.password_env``.
"""

from __future__ import annotations

from pathlib import Path

from driftline.config import StoreSettings
from driftline.store.base import (
    SkipExisting,
    Store,
    StoreError,
    StoreQueryError,
    StoreUnavailableError,
    StoreUrlError,
)
from driftline.store.chdb_store import ChdbPathInUseError, ChdbStore, StoreInUseError
from driftline.store.migrations import (
    MigrationChangedError,
    SchemaTooNewError,
    SchemaTooOldError,
    StoreNotFoundError,
    check_current,
    migrate,
)

__all__ = [
    "ChdbPathInUseError",
    "ChdbStore",
    "MigrationChangedError",
    "SchemaTooNewError",
    "SchemaTooOldError",
    "SkipExisting",
    "Store",
    "StoreError",
    "StoreInUseError",
    "StoreNotFoundError",
    "StoreQueryError",
    "StoreUnavailableError",
    "StoreUrlError",
    "chdb_path",
    "connect",
    "open_store",
]


def chdb_path(url: str) -> Path:
    """The directory of a ``chdb://`` URL.

    >>> chdb_path("chdb:///var/lib/driftline").as_posix()
    '/var/lib/driftline'
    >>> chdb_path("chdb://var/chdb").as_posix()
    'var/chdb'
    """
    rest = url.removeprefix("chdb://")
    if not rest:
        raise StoreUrlError(f"{url!r}: give a path, e.g. chdb://var/chdb or chdb:///abs/path")
    return Path(rest)


def connect(url: str, settings: StoreSettings | None = None) -> Store:
    """A store for ``url`` without touching the schema."""
    settings = settings or StoreSettings.model_validate({})
    if url.startswith("chdb://"):
        return ChdbStore(chdb_path(url))
    if url.startswith(("clickhouse://", "clickhouses://")):
        from driftline.store.server_store import ServerStore

        return ServerStore(url, settings)
    raise StoreUrlError(
        f"store URL {url!r} must start with chdb://, clickhouse:// or clickhouses://"
    )


def open_store(
    url: str | None = None, settings: StoreSettings | None = None, *, read_only: bool = False
) -> Store:
    """Connect to ``url`` (default: ``settings.url``), creating database and schema if missing.

    ``read_only`` (``report``, ``sql`` without ``--write``): the store must exist at the newest
    schema; it gets no DDL at all, and a missing path or schema raises
    :class:`StoreNotFoundError` instead of creating an empty store.

    Otherwise an existing store's TTL changes only when the configuration sets
    ``store.ttl_days`` explicitly (file or environment): the default fills in new tables but
    never shortens the retention someone chose for existing ones.
    """
    settings = settings or StoreSettings.model_validate({})
    url = url or settings.url
    # The engine writes its catalogue (metadata/) when it first opens a path: without one,
    # there is no store, and opening it would already write into the directory.
    if read_only and url.startswith("chdb://") and not (chdb_path(url) / "metadata").is_dir():
        raise StoreNotFoundError(
            f"no store at {chdb_path(url)} (from {url}); check --store or store.url. A store is "
            "created by `driftline worker`, `up`, `demo` or `load`, never by a reading command"
        )
    store = connect(url, settings)
    try:
        if read_only:
            check_current(store)
        else:
            migrate(store, settings.ttl_days, manage_ttl="ttl_days" in settings.model_fields_set)
    except BaseException:
        store.close()
        raise
    return store
