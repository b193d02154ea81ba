"""Checks that need more than the settings' own validation: run by ``config check``, and at
the start of ``worker`` and ``replay``, so a mistake stops the process instead of failing
every page (a missing secret) or crashing later (a misspelled metric).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping

from driftline.config import Settings, missing_secrets
from driftline.detectors import METRIC_NAMES


def metric_problems(settings: Settings) -> list[str]:
    """``detectors.enabled_metrics`` entries that name no detector metric.

    >>> from driftline.config import DetectorSettings
    >>> metric_problems(Settings(detectors=DetectorSettings(enabled_metrics=["ouput_tokens"])))
    ["detectors.enabled_metrics: no metric 'ouput_tokens' (did you mean output_tokens?)"]
    """
    problems = []
    for name in settings.detectors.enabled_metrics or []:
        if name not in METRIC_NAMES:
            close = difflib.get_close_matches(name, METRIC_NAMES, n=1)
            hint = (
                f" (did you mean {close[0]}?)" if close else f"; known: {', '.join(METRIC_NAMES)}"
            )
            problems.append(f"detectors.enabled_metrics: no metric {name!r}{hint}")
    return problems


def name_warnings(settings: Settings) -> list[str]:
    """Workflow, tenant and route names under ``[workflows]`` that no span can carry: the
    normalizer makes a name with other characters safe (``streams.normalize.safe_name``),
    so settings under the raw name would never apply.

    >>> from driftline.config import WorkflowSettings
    >>> named = {"chat": WorkflowSettings(), "chat bot!": WorkflowSettings()}
    >>> [w.split("; ")[0] for w in name_warnings(Settings(workflows=named))]
    ["workflows.'chat bot!': spans carry this name as 'chat bot_~cf8f87a3'"]
    """
    from driftline.streams.normalize import safe_name

    found = []
    for workflow, workflow_settings in settings.workflows.items():
        named = [("workflows", workflow, f"workflows.{workflow!r}")]
        named += [
            ("tenant", t, f"workflows.{workflow!r}.tenants.{t!r}")
            for t in workflow_settings.tenants
        ]
        named += [
            ("route", r, f"workflows.{workflow!r}.routes.{r!r}") for r in workflow_settings.routes
        ]
        for field, name, where in named:
            safe = safe_name(name, field, {})
            if safe != name:
                found.append(
                    f"{where}: spans carry this name as {safe!r}; settings under the name as "
                    "written never apply"
                )
    return found


def preflight(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> tuple[list[str], list[str]]:
    """(errors, warnings) of ``settings`` in this environment; secrets are never printed."""
    errors, warnings = missing_secrets(settings, environ)
    return metric_problems(settings) + errors, warnings + name_warnings(settings)
