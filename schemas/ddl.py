"""Versioned ClickHouse DDL: the files under ``schemas/ddl/`` as ordered migrations.

A migration file is ``NNNN_name.sql``: statements separated by ``;`` at the end of a line,
``--`` comments allowed. ``${ttl_days}`` is the one placeholder, filled from
``settings.store.ttl_days``. Applying them to a store lives in :mod:`driftline.store.migrations`.

>>> [m.version for m in load_migrations()][:2]
[1, 2]
>>> split_statements("SELECT 1; -- a; comment\\nSELECT 2;\\n")
['SELECT 1', 'SELECT 2']
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Final

DDL_DIR: Final = Path(__file__).parent / "ddl"
DATABASE: Final = "driftline"
MIGRATIONS_TABLE: Final = f"{DATABASE}.schema_migrations"

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationFileError(ValueError):
    """A file under schemas/ddl/ is misnamed or malformed."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    text: str  # the file as written, placeholders unfilled

    @property
    def checksum(self) -> str:
        """Hash of the file as written; a changed applied migration is an error."""
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]

    def statements(self, ttl_days: int) -> list[str]:
        """The statements to run, placeholders filled."""
        try:
            rendered = Template(self.text).substitute(ttl_days=int(ttl_days))
        except (KeyError, ValueError) as exc:
            raise MigrationFileError(
                f"{self.version:04d}_{self.name}.sql uses an unknown placeholder: {exc}; "
                "only ${ttl_days} is defined"
            ) from exc
        return split_statements(rendered)


def split_statements(sql: str) -> list[str]:
    """Split on ``;`` that ends a line (after a trailing comment is removed).

    ``--`` inside a string literal is not supported; the DDL files do not use it.
    """
    statements: list[str] = []
    current: list[str] = []
    for line in sql.splitlines():
        current.append(line)
        code = line.split("--", 1)[0].rstrip()
        if code.endswith(";"):
            statements.append("\n".join(current))
            current = []
    statements.append("\n".join(current))
    cleaned = []
    for statement in statements:
        # Comments go: ClickHouse keeps a view's text, and a comment there is noise.
        code_lines = (line.split("--", 1)[0].rstrip() for line in statement.splitlines())
        body = "\n".join(line for line in code_lines if line.strip()).strip()
        if body:
            cleaned.append(body.rstrip().removesuffix(";").rstrip())
    return cleaned


def load_migrations(ddl_dir: Path = DDL_DIR) -> list[Migration]:
    """All migrations in version order; gaps and duplicate versions are errors."""
    migrations = []
    for path in sorted(ddl_dir.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise MigrationFileError(f"{path}: name it NNNN_lowercase_name.sql")
        migrations.append(Migration(int(match.group(1)), match.group(2), path.read_text()))
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise MigrationFileError(
                f"{ddl_dir}: migration versions must be 1..N without gaps; "
                f"found {migration.version:04d} where {expected:04d} was expected"
            )
    return migrations


def latest_version(ddl_dir: Path = DDL_DIR) -> int:
    """The newest schema version this code understands."""
    migrations = load_migrations(ddl_dir)
    return migrations[-1].version if migrations else 0
