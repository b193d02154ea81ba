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


def preflight(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> tuple[list[str], list[str]]:
    """(errors, warnings) of ``settings`` in this environment; secrets are never printed."""
    errors, warnings = missing_secrets(settings, environ)
    return metric_problems(settings) + errors, warnings
