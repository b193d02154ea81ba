"""Routing authority: calls answered by a model outside the policy (shadow routing), and
bundles or model versions outside the registered ones (ghost deployments).

The *answering* model decides (``response_model``; the requested one only when a call
reports no answering model): a gateway that answers a request for an allowed model with
another one is exactly the shadow routing to catch. A call naming no model at all cannot
be judged and is not flagged.

Names on ``allowed_models`` match by :func:`model_allowed`: exactly, or (the default
``model_match = "alias"``) an undated alias matches its dated snapshots, the alias followed
by one date suffix of the forms providers use: ``-YYYY-MM-DD`` (OpenAI,
``gpt-4o-mini-2024-07-18``), ``-YYYYMMDD`` (Anthropic, ``claude-3-5-sonnet-20241022``),
``@YYYYMMDD`` (Vertex AI, ``claude-3-5-sonnet@20240620``) and ``-MMDD`` (older OpenAI,
``gpt-4-0613``). Nothing else: ``gpt-4o`` does not cover ``gpt-4o-mini``, a dated name
on the list covers only itself. ``model_match = "exact"`` requires the exact name.

One incident per workflow and condition, not per offender: a workflow answered by 5,000
unapproved model names (a misconfigured gateway, or span attributes written to flood the
pager) is one critical incident whose evidence lists the offenders seen while it is open
(:data:`MAX_LISTED_OFFENDERS`, then ``offenders_truncated``). Its score is the number
listed, so a new offender is a material change: an ``update`` of the same incident, never
a second page.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator
from typing import Any, Final

from driftline.config import WorkflowSettings
from driftline.streams.monitor.hits import Hit

DATE_SUFFIX: Final = re.compile(r"(?:-\d{4}-\d{2}-\d{2}|-\d{8}|@\d{8}|-\d{4})")
MAX_LISTED_OFFENDERS: Final = 20
MAX_OFFENDER_CHARS: Final = 200  # a name is span data: cut before it reaches a page


def answering_model(event: dict[str, Any]) -> str:
    """The model that answered a call, else the one it asked for."""
    return str(event.get("response_model") or event.get("request_model") or "")


def model_allowed(model: str, allowed: Iterable[str], exact: bool = False) -> bool:
    """Whether ``model`` (the answering model) is on the ``allowed`` list.

    >>> model_allowed("gpt-4o-mini-2024-07-18", ["gpt-4o-mini"])
    True
    >>> model_allowed("gpt-4o-mini-2024-07-18", ["gpt-4o-mini"], exact=True)
    False
    >>> model_allowed("gpt-4o-mini-2024-07-18", ["gpt-4o"])  # another model, not a date
    False
    >>> model_allowed("claude-3-5-sonnet@20240620", ["claude-3-5-sonnet"])
    True
    >>> model_allowed("gpt-4-turbo-2024-04-09", ["gpt-4o-mini", "gpt-4o"])
    False
    >>> model_allowed("", ["gpt-4o"])  # nothing to judge
    True
    """
    if not model:
        return True
    names = set(allowed)
    if model in names:
        return True
    if exact:
        return False
    return any(
        model.startswith(name) and DATE_SUFFIX.fullmatch(model[len(name) :]) for name in names
    )


def routing_hits_of(
    workflow: str, wf: WorkflowSettings, events: list[dict[str, Any]], times: list[int]
) -> list[Hit]:
    """:func:`routing_hits` of every call in turn (``times``: each call's time); nothing
    to check, nothing read when the workflow has no routing policy."""
    if (
        wf.allowed_models is None
        and wf.registered_bundles is None
        and wf.registered_model_versions is None
    ):
        return []
    verdicts: dict[str, bool] = {}  # answering model -> allowed, for this batch
    out: list[Hit] = []
    for e, ts in zip(events, times, strict=True):
        out.extend(routing_hits(workflow, wf, e, ts, verdicts))
    return out


def routing_hits(
    workflow: str,
    wf: WorkflowSettings,
    e: dict[str, Any],
    ts: int,
    verdicts: dict[str, bool] | None = None,
) -> Iterator[Hit]:
    """The routing conditions one call breaks (each an alert of kind ``routing``).
    ``verdicts`` remembers :func:`model_allowed` per model across calls of one batch."""
    bundle_id = str(e.get("bundle_id") or "")
    requested = str(e.get("request_model") or "")
    answered = str(e.get("response_model") or "")
    model = answering_model(e)
    version = str(e.get("model_version") or "")
    found: list[tuple[str, str, dict[str, Any]]] = []
    allowed = True
    if wf.allowed_models is not None:
        cached = None if verdicts is None else verdicts.get(model)
        if cached is None:
            cached = model_allowed(model, wf.allowed_models, exact=wf.model_match == "exact")
            if verdicts is not None:
                verdicts[model] = cached
        allowed = cached
    if not allowed:
        assert wf.allowed_models is not None
        found.append(
            (
                "unallowed_model",
                "critical",
                {
                    "model": model,
                    "request_model": requested,
                    "response_model": answered,
                    "allowed_models": list(wf.allowed_models),
                    "model_match": wf.model_match,
                },
            )
        )
    if wf.registered_bundles is not None and bundle_id not in wf.registered_bundles:
        found.append(
            (
                "unregistered_bundle",
                "error",
                {
                    "model": model,
                    "model_version": version,
                    "prompt_version": e.get("prompt_version", ""),
                    "retrieval_index_version": e.get("retrieval_index_version", ""),
                    "router_version": e.get("router_version", ""),
                },
            )
        )
    registered = wf.registered_model_versions
    if registered is not None and version and version not in registered:
        found.append(
            ("unregistered_model_version", "error", {"model": model, "model_version": version})
        )
    for metric, severity, evidence in found:
        offender = {"unregistered_bundle": bundle_id, "unregistered_model_version": version}
        offender_name = offender.get(metric, model)
        evidence |= {
            "offenders": [offender_name[:MAX_OFFENDER_CHARS]],
            "trace_id": e.get("trace_id", ""),
            "span_id": e.get("span_id", ""),
            "bundle_id": bundle_id,
            "service": e.get("service", ""),
        }
        yield Hit(
            ts=ts,
            workflow=workflow,
            kind="routing",
            metric=metric,
            bundle_id="",
            severity=severity,
            score=1.0,
            threshold=None,
            baseline=None,
            current=None,
            evidence=evidence,
        )


def with_offenders_of(hit: Hit, open_evidence: dict[str, Any] | None) -> Hit:
    """``hit`` carrying the offenders its open incident already lists (``open_evidence``).

    >>> first = Hit(ts=1, workflow="w", kind="routing", metric="unallowed_model",
    ...     bundle_id="", severity="critical", score=1.0, threshold=None, baseline=None,
    ...     current=None, evidence={"offenders": ["gpt-x"]})
    >>> second = dataclasses.replace(first, evidence={"offenders": ["gpt-y"]})
    >>> merged = with_offenders_of(second, first.evidence)
    >>> merged.evidence["offenders"], merged.score
    (['gpt-x', 'gpt-y'], 2.0)
    """
    if not open_evidence:
        return hit
    listed = [str(o) for o in open_evidence.get("offenders") or ()]
    truncated = bool(open_evidence.get("offenders_truncated"))
    for offender in hit.evidence.get("offenders") or ():
        if offender in listed:
            continue
        if len(listed) < MAX_LISTED_OFFENDERS:
            listed.append(offender)
        else:
            truncated = True
    evidence = {**hit.evidence, "offenders": listed}
    if truncated:
        evidence["offenders_truncated"] = True
    return dataclasses.replace(hit, evidence=evidence, score=float(len(listed)))
