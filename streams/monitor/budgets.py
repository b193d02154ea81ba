"""Budgets per workflow, and per tenant and route where configured.

Per call: tokens, retries and loop depth against their ceilings. Per trace: loop depth
and amplification. Over event-time windows: tokens and cost per ``window_s``, and the
multi-window burn rate of ``monthly_cost_usd``.

Per-call and per-trace ceilings are *recent* conditions (an alert stays open while
breaching calls keep coming). Window sums and burn rates are *state*: the alert stays
open while the window, re-read at the workflow's clock, is above a share of
its limit (:data:`detectors.burn_rate.RECOVERY`: a lower bar to stay open than to open),
so spend that keeps running stays one incident and spend that stops resolves once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from driftline.config import BudgetSettings, WorkflowSettings
from driftline.detectors import BurnRate, BurnVerdict, WindowSum
from driftline.streams.monitor.hits import Hit, event_time

WINDOW_METRICS: Final = ("tokens_per_window", "cost_usd_per_window")
BURN_METRIC: Final = "cost_burn_rate"


@dataclass(slots=True)
class Scope:
    """The windows of one budget scope (the workflow, a tenant or a route)."""

    tokens: WindowSum | None
    cost: WindowSum | None
    burn: BurnRate | None


def scopes(wf: WorkflowSettings, record: dict[str, Any]) -> list[tuple[str, BudgetSettings]]:
    """(label, budget) of every scope ``record`` counts against; the workflow's label is ''."""
    out = [("", wf.budgets)]
    tenant = str(record.get("tenant") or "")
    route = str(record.get("route") or "")
    if tenant in wf.tenants:
        out.append((f"[tenant={tenant}]", wf.tenants[tenant]))
    if route in wf.routes:
        out.append((f"[route={route}]", wf.routes[route]))
    return out


def new_scope(budget: BudgetSettings) -> Scope:
    tokens, cost = budget.tokens_per_window, budget.cost_usd_per_window
    return Scope(
        WindowSum(budget.window_s, float(tokens)) if tokens else None,
        WindowSum(budget.window_s, cost) if cost else None,
        BurnRate(budget.monthly_cost_usd) if budget.monthly_cost_usd else None,
    )


def events_hits(
    workflow: str,
    wf: WorkflowSettings,
    table: dict[str, Scope],
    events: list[dict[str, Any]],
    times: list[int],
) -> list[Hit]:
    """:func:`event_hits` of every call in turn, ``times`` their times (capped at the
    workflow's clock). A workflow whose calls all count against its own scope alone
    (no tenant or route budgets) and that sets no budget has nothing to check."""
    if not wf.tenants and not wf.routes:
        budget = wf.budgets
        scope = table.get("")
        if scope is None:
            scope = table[""] = new_scope(budget)
        if _checks_nothing(budget, scope):
            return []
        out: list[Hit] = []
        for e, ts in zip(events, times, strict=True):
            out.extend(_call_hits(workflow, "", budget, scope, e, ts))
        return out
    out = []
    for e, ts in zip(events, times, strict=True):
        out.extend(event_hits(workflow, wf, table, e, ts))
    return out


def _checks_nothing(budget: BudgetSettings, scope: Scope) -> bool:
    """Whether a call can neither break ``budget`` nor feed ``scope``'s windows."""
    return (
        budget.max_tokens_per_request is None
        and budget.max_retries_per_request is None
        and budget.max_loop_depth is None
        and scope.tokens is None
        and scope.cost is None
        and scope.burn is None
    )


def event_hits(
    workflow: str, wf: WorkflowSettings, table: dict[str, Scope], e: dict[str, Any], now: int
) -> list[Hit]:
    """Feed one call to its scopes' windows; the budgets it breaks. Its time is capped at
    the workflow's clock ``now`` (a far-future record would take a window's slot)."""
    ts = min(event_time(e), now)
    hits: list[Hit] = []
    for label, budget in scopes(wf, e):
        scope = table.get(label)
        if scope is None:
            scope = table[label] = new_scope(budget)
        hits.extend(_call_hits(workflow, label, budget, scope, e, ts))
    return hits


def _call_hits(
    workflow: str, label: str, budget: BudgetSettings, scope: Scope, e: dict[str, Any], ts: int
) -> list[Hit]:
    tokens = int(e.get("input_tokens") or 0) + int(e.get("output_tokens") or 0)
    cost = e.get("cost_usd")
    retries = e.get("retry_attempt") or 0
    depth = e.get("loop_depth") or 0
    checks: list[tuple[str, float, float | None, str]] = [
        ("tokens_per_request", tokens, budget.max_tokens_per_request, "warning"),
        ("retries_per_request", retries, budget.max_retries_per_request, "warning"),
        ("loop_depth", depth, budget.max_loop_depth, "warning"),
    ]
    if scope.tokens is not None:
        scope.tokens.add(ts, tokens)
        total = scope.tokens.total(ts)
        checks.append(("tokens_per_window", total, budget.tokens_per_window, "error"))
    if cost is not None and scope.cost is not None:
        scope.cost.add(ts, float(cost))
        total = scope.cost.total(ts)
        checks.append(("cost_usd_per_window", total, budget.cost_usd_per_window, "error"))
    broken = [c for c in checks if c[2] is not None and c[1] > c[2]]
    hits: list[Hit] = []
    if broken:
        context = {
            "window_s": budget.window_s,
            "trace_id": e.get("trace_id", ""),
            "span_id": e.get("span_id", ""),
            "service": e.get("service", ""),
            "model": e.get("response_model") or e.get("request_model") or "",
        }
        hits = [
            limit_hit(
                ts=ts,
                workflow=workflow,
                metric=metric,
                label=label,
                severity=severity,
                observed=float(observed),
                limit=limit,
                context=context,
            )
            for metric, observed, limit, severity in broken
            if limit is not None
        ]
    if cost is not None and scope.burn is not None:
        scope.burn.add(ts, float(cost))
        verdict = scope.burn.verdict(ts)
        if verdict is not None:
            hits.append(burn_hit(ts, workflow, label, verdict, budget.monthly_cost_usd))
    return hits


def limits_traces(wf: WorkflowSettings) -> bool:
    """Whether any scope of ``wf`` limits a trace (loop depth, amplification): without
    one, :func:`trace_hits` finds nothing."""
    return any(
        budget.max_loop_depth is not None or budget.max_amplification is not None
        for budget in (wf.budgets, *wf.tenants.values(), *wf.routes.values())
    )


def trace_hits(workflow: str, wf: WorkflowSettings, trace: dict[str, Any], now: int) -> list[Hit]:
    """The per-trace budgets (loop depth, amplification) an assembled trace breaks."""
    ts = min(event_time(trace), now)
    context = {
        "trace_id": trace.get("trace_id", ""),
        "service": trace.get("service", ""),
        "llm_call_count": trace.get("llm_call_count", 0),
        "total_tokens": trace.get("total_tokens", 0),
    }
    hits: list[Hit] = []
    for label, budget in scopes(wf, trace):
        checks = [
            ("loop_depth", trace.get("max_loop_depth") or 0, budget.max_loop_depth),
            ("amplification", trace.get("amplification"), budget.max_amplification),
        ]
        hits.extend(
            limit_hit(
                ts=ts,
                workflow=workflow,
                metric=metric,
                label=label,
                severity="warning",
                observed=float(observed),
                limit=limit,
                context=context,
            )
            for metric, observed, limit in checks
            if limit is not None and observed is not None and observed > limit
        )
    return hits


def holds(table: dict[str, Scope], metric: str, now: int) -> bool:
    """Whether a window or burn-rate alert's condition still holds at ``now``: its window
    re-read at the workflow's clock, against the detector's recovery bar (a share of the
    limit or factor, below the bar that opened it). ``metric`` is the alert's
    (``cost_usd_per_window[tenant=acme]``)."""
    base, _, rest = metric.partition("[")
    scope = table.get(f"[{rest}" if rest else "")
    if scope is None:
        return False
    detector = {
        "tokens_per_window": scope.tokens,
        "cost_usd_per_window": scope.cost,
        BURN_METRIC: scope.burn,
    }.get(base)
    return detector is not None and detector.shift_holds(now)


def limit_hit(
    *,
    ts: int,
    workflow: str,
    metric: str,
    label: str,
    severity: str,
    observed: float,
    limit: float,
    context: dict[str, Any],
) -> Hit:
    evidence = {"scope": label or "workflow", "observed": observed, "limit": limit, **context}
    return Hit(
        ts=ts,
        workflow=workflow,
        kind="budget",
        metric=metric + label,
        bundle_id="",
        severity=severity,
        score=observed / limit,
        threshold=float(limit),
        baseline=float(limit),
        current=observed,
        evidence=evidence,
        condition="window" if metric in WINDOW_METRICS else "recent",
    )


def burn_hit(
    ts: int, workflow: str, label: str, verdict: BurnVerdict, monthly: float | None
) -> Hit:
    slower = min(verdict.short_rate, verdict.long_rate)
    evidence = {
        "scope": label or "workflow",
        "short_window_s": verdict.short_s,
        "long_window_s": verdict.long_s,
        "factor": verdict.factor,
        "short_burn_rate": verdict.short_rate,
        "long_burn_rate": verdict.long_rate,
        "monthly_cost_usd": monthly,
    }
    return Hit(
        ts=ts,
        workflow=workflow,
        kind="budget",
        metric=BURN_METRIC + label,
        bundle_id="",
        severity=verdict.severity,
        score=slower / verdict.factor,
        threshold=verdict.factor,
        baseline=1.0,
        current=slower,
        evidence=evidence,
        condition="burn",
    )
