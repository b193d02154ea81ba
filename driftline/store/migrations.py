"""Apply the versioned DDL in ``schemas/ddl/`` to a store, once per version.

The ``driftline.schema_migrations`` table records each applied version with the checksum of
its file. Applying again does nothing; a store whose schema is newer than this code, or whose
applied file has since been edited, is refused with a message that says what to do. New
tables get ``store.ttl_days``; existing ones are brought to it only when the caller asks
(``manage_ttl``), which ``open_store`` does only for a value set explicitly in the
configuration.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime

import pyarrow as pa

from driftline.schemas.ddl import DATABASE, MIGRATIONS_TABLE, Migration, load_migrations
from driftline.schemas.tables import SCHEMA_MIGRATIONS
from driftline.store.base import Store, StoreError, StoreQueryError

log = logging.getLogger(__name__)


class SchemaTooNewError(StoreError):
    """The store was migrated by a newer driftline than this one."""


class MigrationChangedError(StoreError):
    """A migration file differs from the one applied to this store."""


class StoreNotFoundError(StoreError):
    """A reading command was pointed at a path or database that holds no driftline store."""


class SchemaTooOldError(StoreError):
    """A reading command met a store that needs migrations it may not apply."""


_BOOTSTRAP = (
    f"CREATE DATABASE IF NOT EXISTS {DATABASE}",
    f"""CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE}
(
    version    UInt32,
    name       String,
    checksum   String,
    applied_at DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY version""",
)


def applied_versions(store: Store) -> dict[int, str]:
    """Version -> checksum of every migration applied to ``store``."""
    table = store.query(f"SELECT version, checksum FROM {MIGRATIONS_TABLE} FINAL ORDER BY version")
    versions = table.column("version").to_pylist()
    return dict(zip(versions, table.column("checksum").to_pylist(), strict=True))


def check_current(store: Store, migrations: list[Migration] | None = None) -> None:
    """Raise unless ``store`` holds a driftline schema at exactly this code's newest version.

    Sends only SELECTs: this is how reading commands open a store.
    """
    known = load_migrations() if migrations is None else migrations
    try:
        applied = applied_versions(store)
    except StoreQueryError:
        applied = {}
    if not applied:
        raise StoreNotFoundError(
            f"{store.url} holds no driftline store (no {MIGRATIONS_TABLE}); check --store or "
            "store.url. A store is created by `driftline worker`, `up`, `demo` or `load`"
        )
    newest_known = known[-1].version if known else 0
    if max(applied) > newest_known:
        raise SchemaTooNewError(
            f"the store at {store.url} has schema version {max(applied)}, this driftline knows "
            f"up to {newest_known}; upgrade driftline"
        )
    missing = [m.version for m in known if m.version not in applied]
    if missing:
        raise SchemaTooOldError(
            f"the store at {store.url} lacks schema versions {missing}; a reading command does "
            "not migrate: start the worker (or `driftline load`) of this version once first"
        )
    for migration in known:
        if applied[migration.version] != migration.checksum:
            raise MigrationChangedError(
                f"schemas/ddl/{migration.version:04d}_{migration.name}.sql differs from the one "
                f"applied to {store.url}"
            )


def migrate(
    store: Store,
    ttl_days: int,
    migrations: list[Migration] | None = None,
    *,
    manage_ttl: bool = True,
) -> list[int]:
    """Bring ``store`` to the newest schema; return the versions applied now (often none).

    A store already at the newest schema gets no DDL at all (a read-only user can open it);
    ``manage_ttl=False`` also leaves its TTL alone.
    """
    known = load_migrations() if migrations is None else migrations
    try:
        applied = applied_versions(store)
    except StoreQueryError:  # no migrations table yet: a new store
        applied = {}
    newest_known = known[-1].version if known else 0
    if applied and max(applied) > newest_known:
        raise SchemaTooNewError(
            f"the store at {store.url} has schema version {max(applied)}, this driftline knows "
            f"up to {newest_known}; upgrade driftline or point store.url at another store"
        )
    if len(applied) < len(known):
        for statement in _BOOTSTRAP:
            store.command(statement)
    done = []
    for migration in known:
        checksum = applied.get(migration.version)
        if checksum is not None:
            if checksum != migration.checksum:
                raise MigrationChangedError(
                    f"schemas/ddl/{migration.version:04d}_{migration.name}.sql changed after it "
                    f"was applied to {store.url}; restore it and put the change in a new migration"
                )
            continue
        for statement in migration.statements(ttl_days):
            store.command(statement)
        values = (
            pa.array([migration.version], pa.uint32()),
            [migration.name],
            [migration.checksum],
            pa.array([datetime.now(UTC)], pa.timestamp("us", "UTC")),
        )
        record = dict(zip(SCHEMA_MIGRATIONS.columns, values, strict=True))
        store.insert_arrow(SCHEMA_MIGRATIONS.name, pa.table(record))
        done.append(migration.version)
    if manage_ttl:
        apply_ttl(store, ttl_days)
    return done


_TTL = re.compile(r"\bTTL\s+(.*?toIntervalDay\((\d+)\))", re.DOTALL)


def apply_ttl(store: Store, ttl_days: int) -> list[str]:
    """Bring every table's TTL to ``ttl_days`` (the setting may change after the tables exist).

    Returns the tables changed. ClickHouse rewrites affected parts in the background.
    """
    tables = store.query(
        "SELECT name, create_table_query FROM system.tables"
        " WHERE database = {db:String} AND engine LIKE '%MergeTree'",
        {"db": DATABASE},
    )
    changed = []
    was: set[int] = set()
    for name, ddl in zip(tables.column(0).to_pylist(), tables.column(1).to_pylist(), strict=True):
        match = _TTL.search(ddl)
        if match is None or int(match.group(2)) == ttl_days:
            continue
        expression = match.group(1)[: -len(f"{match.group(2)})")] + f"{int(ttl_days)})"
        store.command(f"ALTER TABLE {DATABASE}.{name} MODIFY TTL {expression}")
        changed.append(name)
        was.add(int(match.group(2)))
    if changed:
        # Said out loud: a shorter retention deletes rows, and an explicit store.ttl_days in a
        # file or the environment of any command that writes is enough to set it.
        level = logging.WARNING if min(was) > ttl_days else logging.INFO
        log.log(
            level,
            "store retention set to %d days on %d tables (was %s days): store.ttl_days",
            ttl_days,
            len(changed),
            "/".join(str(days) for days in sorted(was)),
        )
    return changed
