"""Request events that reach the monitor at once, before their trace closes.

Decode publishes the events it can judge alone straight to ``llm_events`` (key: workflow),
as *requests*; the same events also go through trace assembly as before and come out
completed in the closed trace's message, for the store. The monitor applies each event
once: from its request record when there was one, else from the closed trace.

Which events go early (:func:`monitored_at_decode`)? Trace assembly fills, on close, the
fields an event left empty from its ancestors (``workflow``, ``tenant``, ``route``,
``session_id``) and sets ``loop_depth``. The monitor reads ``workflow`` (its key), and
``tenant`` and ``route`` only for the budgets configured per tenant and per route. So an
event goes early when its own span names its workflow, and its tenant and route too if
its workflow has budgets per tenant or per route: the monitor then sees exactly what it
would see after assembly. ``loop_depth`` is a trace condition: the trace summary's
``max_loop_depth`` raises the same budget alert when the trace closes.

Exactly once: decode is at least once (a crash or rebalance decodes the messages since the
last commit again and publishes the same requests at new offsets). Each request carries
its source position (:data:`streams.positions.SEQ_FIELD`: ``otlp_spans`` partition,
offset, index in that message); decode sends them in order, so per workflow and source
partition the positions only grow, and the monitor keeps the highest applied per workflow
(checkpointed with the workflow's state) and drops what is at or below it.

The ``llm_events`` value (every key always present, so a reader of one kind of record
needs no other)::

    {"events": [...],    # completed events of closed traces (the store writes these)
     "early": [...],     # early[i]: events[i] went out as a request, the monitor has it
     "traces": [...],    # trace summaries
     "requests": [...]}  # events published at decode, each with its source position

Every record travels in internal form (the schema's fields, timestamps as integer
microseconds, :func:`schemas.event.internal`): no ISO 8601 formatting by the writer and no
parsing by the readers, which were a tenth of a worker's CPU once every call was published
twice (requests), and 4% of it for the completed events and traces (measured with py-spy on
``bench/bench_pipeline.py``). Requests add their source position to the event's fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from driftline.config import WorkflowSettings
from driftline.schemas.event import internal, internal_copy
from driftline.streams.codec import dumps, encode_in_parts
from driftline.streams.positions import SEQ_FIELD

__all__ = [
    "EARLY_FIELD",
    "encode_requests",
    "monitored_at_decode",
    "route_requests",
]

# Internal flag on an event that decode published as a request; trace assembly keeps it
# (it is not a schema field, so it never reaches the wire or the store).
EARLY_FIELD: Final = "_early"
# Requests per llm_events message at most. The monitor takes one message as one step and
# orders a step's records by event time; a step of a few seconds of one workflow's traffic
# keeps the arrival order of calls. A large step ordered by end time puts the short calls
# of its first seconds first, and a reference that warms up there (a new bundle, or one
# re-baselined when the traffic restarts) is biased low: measured with the simulator's
# support-chat traffic, steps of 128 calls kept the reference, steps of 200 did not.
REQUESTS_PER_MESSAGE: Final = 64


def monitored_at_decode(
    event: Mapping[str, Any], workflows: Mapping[str, WorkflowSettings]
) -> bool:
    """Whether the monitor may take ``event`` as decoded, without its trace.

    >>> from driftline.config import BudgetSettings
    >>> monitored_at_decode({"workflow": "chat", "tenant": ""}, {})
    True
    >>> monitored_at_decode({"workflow": ""}, {})
    False
    >>> per_tenant = {"chat": WorkflowSettings(tenants={"acme": BudgetSettings()})}
    >>> monitored_at_decode({"workflow": "chat", "tenant": ""}, per_tenant)
    False
    >>> monitored_at_decode({"workflow": "chat", "tenant": "acme"}, per_tenant)
    True
    """
    workflow = event.get("workflow")
    if not workflow:
        return False
    settings = workflows.get(workflow) or workflows.get("*")
    if settings is None:
        return True
    return (bool(event.get("tenant")) or not settings.tenants) and (
        bool(event.get("route")) or not settings.routes
    )


def route_requests(
    events: Iterable[dict[str, Any]],
    source: tuple[int, int],
    workflows: Mapping[str, WorkflowSettings],
    out: dict[str, list[dict[str, Any]]],
) -> None:
    """Append the early events of one source message to ``out[workflow]`` (their schema
    fields, internal form) each with its source position, and flag them
    :data:`EARLY_FIELD` for trace assembly.

    >>> out = {}
    >>> events = [{"workflow": "w", "span_id": "a"}, {"workflow": "", "span_id": "b"}]
    >>> route_requests(events, (2, 40), {}, out)
    >>> [(r["span_id"], r[SEQ_FIELD]) for r in out["w"]], [EARLY_FIELD in e for e in events]
    ([('a', [2, 40, 0])], [True, False])
    """
    index = 0
    for event in events:
        if not monitored_at_decode(event, workflows):
            continue
        # Decode's own events (schema fields, no mark yet) are copied; anything else is
        # rebuilt field by field.
        request = internal(event) if EARLY_FIELD in event else internal_copy(event)
        event[EARLY_FIELD] = True
        request[SEQ_FIELD] = [source[0], source[1], index]
        index += 1
        out.setdefault(str(event["workflow"]), []).append(request)


def encode_requests(requests: list[dict[str, Any]], limit: int) -> list[bytes]:
    """``llm_events`` values of ``requests``, in order, each of at most
    :data:`REQUESTS_PER_MESSAGE` records and ``limit`` bytes.

    Positions keep growing from one message to the next. A single record over the byte
    limit is still sent alone (and fails loudly at the producer).

    >>> parts = encode_requests([{"i": i} for i in range(100)], 300)
    >>> len(parts) > 1, all(len(p) <= 300 for p in parts)
    (True, True)
    >>> from driftline.streams.codec import loads
    >>> [r["i"] for p in parts for r in loads(p)["requests"]] == list(range(100))
    True
    >>> [len(loads(p)["requests"]) for p in encode_requests([{}] * 130, 10**6)]
    [64, 64, 2]
    """
    out: list[bytes] = []
    for start in range(0, len(requests), REQUESTS_PER_MESSAGE):
        out += _encode_within(requests[start : start + REQUESTS_PER_MESSAGE], limit)
    return out


def _encode_within(requests: list[dict[str, Any]], limit: int) -> list[bytes]:
    def encode(start: int, end: int) -> bytes:
        return dumps({"events": [], "early": [], "traces": [], "requests": requests[start:end]})

    return encode_in_parts(len(requests), encode, limit)
