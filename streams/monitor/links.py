"""The links an alert carries: its runbook page and the drift dashboard around it."""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import quote, quote_plus

from driftline.config import AlertSettings

DASHBOARD_BEFORE_MS = 3_600_000  # an hour of context before the alert opened
DASHBOARD_AFTER_MS = 900_000


def runbook_url(settings: AlertSettings, kind: str, metric: str) -> str:
    """The runbook page of a kind of alert (budget scopes share their metric's page).

    >>> runbook_url(AlertSettings(), "budget", "tokens_per_window[tenant=acme]")
    'https://runbooks.example.com/driftline/budget/tokens_per_window'
    """
    base = settings.runbook_base_url.rstrip("/")
    return f"{base}/{kind}/{quote(metric.split('[')[0], safe='')}"


def dashboard_url(settings: AlertSettings, workflow: str, opened_at: int, now: int) -> str:
    """The drift dashboard for ``workflow`` from an hour before the alert to after ``now``.

    >>> dashboard_url(AlertSettings(), "chat", 3_600_000_000, 3_600_000_000)
    'http://localhost:3000/d/driftline-drift?var-workflow=chat&from=0&to=4500000'
    """
    base = settings.dashboard_base_url.rstrip("/")
    # urlencode's form, spelled out: numbers need no quoting, a workflow's once.
    start = quote_plus(str(opened_at // 1000 - DASHBOARD_BEFORE_MS))
    end = quote_plus(str(now // 1000 + DASHBOARD_AFTER_MS))
    return f"{base}/d/driftline-drift?var-workflow={_quoted(workflow)}&from={start}&to={end}"


@lru_cache(maxsize=4096)
def _quoted(workflow: str) -> str:
    return quote_plus(workflow)
