"""The analyst query library: one parameterized ``.sql`` file per question in ``schemas/queries/``.

Parameters use ClickHouse's ``{name:Type}`` syntax, so a file runs unchanged in
``clickhouse-client --param_from=...``, in Grafana, and through :func:`run_query`. A parameter
may be optional: a comment line ``-- Default: name = value`` (the value in ClickHouse's text
form, as ``--param_name=value`` takes it) is used when the caller gives none.

>>> "cost_by_workflow" in query_names()
True
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Final

import pyarrow as pa

from driftline import schemas
from driftline.store.base import Store

QUERY_DIR: Final = Path(schemas.__file__).parent / "queries"
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*):([^}]+)\}")
_DEFAULT = re.compile(r"^--\s*Default:\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$", re.MULTILINE)


class UnknownQueryError(KeyError):
    """No file schemas/queries/<name>.sql."""


def query_names(query_dir: Path = QUERY_DIR) -> list[str]:
    return sorted(p.stem for p in query_dir.glob("*.sql"))


def load_query(name: str, query_dir: Path = QUERY_DIR) -> str:
    path = query_dir / f"{name}.sql"
    if not path.is_file():
        raise UnknownQueryError(f"no query {name!r}; known: {', '.join(query_names(query_dir))}")
    return path.read_text()


def query_params(sql: str) -> dict[str, str]:
    """Parameter name -> ClickHouse type, as declared in the query text.

    >>> query_params("SELECT {a:UInt32} + {a:UInt32}, {at:DateTime64(6)}")
    {'a': 'UInt32', 'at': 'DateTime64(6)'}
    """
    return {name: type_ for name, type_ in _PARAM.findall(sql)}


def query_defaults(sql: str) -> dict[str, str]:
    """Parameter name -> default value (engine text form) of the optional parameters.

    >>> query_defaults("-- Default: environments = []\\nSELECT {environments:Array(String)}")
    {'environments': '[]'}
    """
    declared = query_params(sql)
    defaults = dict(_DEFAULT.findall(sql))
    unknown = sorted(set(defaults) - set(declared))
    if unknown:
        raise ValueError(f"defaults for parameters the query does not use: {', '.join(unknown)}")
    return defaults


def run_query(store: Store, name: str, **params: Any) -> pa.Table:
    """Run library query ``name`` with its parameters; a missing one is named in the error.

    Optional parameters (``-- Default:`` lines) take their default when not given.
    """
    sql = load_query(name)
    params = {**query_defaults(sql), **params}
    missing = sorted(set(query_params(sql)) - set(params))
    if missing:
        raise TypeError(f"query {name!r} needs parameters: {', '.join(missing)}")
    return store.query(sql, params)
