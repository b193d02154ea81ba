"""``driftline sql``: library queries by name, parameters, read-only by default.

Runs the CLI in a subprocess: chdb allows one store path per process, and the rest of the
suite holds its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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


def test_named_query_defaults_and_missing_parameters(tmp_path: Path) -> None:
    store = f"chdb://{tmp_path / 'db'}"
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
    store = f"chdb://{tmp_path / 'db'}"
    refused = driftline(
        "sql", "DROP TABLE driftline.llm_traces_raw", "--store", store, cwd=tmp_path
    )
    assert refused.returncode == 2
    assert "--write" in refused.stderr
