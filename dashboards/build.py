"""Build every dashboard and write it as JSON for Grafana's file provisioning.

>>> sorted(spec.uid for spec in dashboard_specs())
['driftline-cost', 'driftline-drift', 'driftline-sre']
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from driftline.dashboards import cost_attribution, drift, sre_overview
from driftline.dashboards.panels import BuildContext, DashboardSpec

MODULES = (sre_overview, cost_attribution, drift)


def dashboard_specs(context: BuildContext | None = None) -> list[DashboardSpec]:
    context = context or BuildContext()
    return [module.spec(context) for module in MODULES]


def build_all(context: BuildContext | None = None) -> dict[str, dict[str, Any]]:
    """uid -> dashboard JSON."""
    return {spec.uid: spec.to_json() for spec in dashboard_specs(context)}


def write_all(out_dir: Path, context: BuildContext | None = None) -> list[Path]:
    """Write ``<uid>.json`` per dashboard into ``out_dir``; return the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for uid, board in build_all(context).items():
        path = out_dir / f"{uid}.json"
        path.write_text(json.dumps(board, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
