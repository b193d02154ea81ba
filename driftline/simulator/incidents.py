"""Incidents to inject into simulated traffic, and what each one changes.

An incident is ``KIND@SECONDS[:WORKFLOW][=MAGNITUDE]`` on the command line, for
example ``token-drift@300:support-chat=2.5``. It starts ``SECONDS`` of event time
after the simulation starts and lasts to the end; without a workflow it applies
to every workflow it makes sense for. ``MAGNITUDE`` defaults per kind (see
:data:`DEFAULT_MAGNITUDE`):

``token-drift``       output tokens x magnitude (latency and output length follow)
``retry-storm``       probability that an attempt fails and is retried
``kv-pressure``       mean KV-cache usage of self-hosted servers (0..1)
``unapproved-model``  share of calls routed to a model the workflow did not approve
``output-length``     answers cut at magnitude x their usual (median) length: finish ``length``
``cost-runaway``      agent loop iterations and prompt size x magnitude, expensive model
``canary``            share of traffic served by a new bundle version

>>> parse_incident("token-drift@60:support-chat=2.5")
Incident(kind='token-drift', at_s=60.0, workflow='support-chat', magnitude=2.5)
>>> parse_incident("canary@120").magnitude
0.3
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

TOKEN_DRIFT: Final = "token-drift"
RETRY_STORM: Final = "retry-storm"
KV_PRESSURE: Final = "kv-pressure"
UNAPPROVED_MODEL: Final = "unapproved-model"
OUTPUT_LENGTH: Final = "output-length"
COST_RUNAWAY: Final = "cost-runaway"
CANARY: Final = "canary"

DEFAULT_MAGNITUDE: Final[dict[str, float]] = {
    TOKEN_DRIFT: 2.0,
    RETRY_STORM: 0.6,
    KV_PRESSURE: 0.93,
    UNAPPROVED_MODEL: 1.0,
    OUTPUT_LENGTH: 0.3,
    COST_RUNAWAY: 4.0,
    CANARY: 0.3,
}
INCIDENT_KINDS: Final = tuple(DEFAULT_MAGNITUDE)
# Magnitudes that are shares or probabilities must stay within 0..1.
_FRACTION_KINDS: Final = frozenset({RETRY_STORM, KV_PRESSURE, UNAPPROVED_MODEL, CANARY})

_SPEC = re.compile(
    r"^(?P<kind>[a-z-]+)@(?P<at>\d+(?:\.\d+)?)(?::(?P<workflow>[A-Za-z0-9_.-]+))?"
    r"(?:=(?P<magnitude>\d+(?:\.\d+)?))?$"
)


class IncidentSpecError(ValueError):
    """An ``--incident`` value that cannot be parsed; the message shows the syntax."""


@dataclass(frozen=True, slots=True)
class Incident:
    kind: str
    at_s: float
    workflow: str | None = None  # None: every workflow
    magnitude: float | None = None  # None: DEFAULT_MAGNITUDE[kind]

    def __post_init__(self) -> None:
        if self.kind not in DEFAULT_MAGNITUDE:
            raise IncidentSpecError(
                f"unknown incident kind {self.kind!r}; use one of {', '.join(INCIDENT_KINDS)}"
            )
        if self.at_s < 0:
            raise IncidentSpecError(f"incident time must be >= 0 seconds, got {self.at_s}")
        if self.magnitude is None:
            object.__setattr__(self, "magnitude", DEFAULT_MAGNITUDE[self.kind])
        value = float(self.magnitude)  # type: ignore[arg-type]
        if value <= 0 or (self.kind in _FRACTION_KINDS and value > 1):
            limit = "in (0, 1]" if self.kind in _FRACTION_KINDS else "> 0"
            raise IncidentSpecError(f"{self.kind} magnitude must be {limit}, got {value}")

    @property
    def value(self) -> float:
        return float(self.magnitude)  # type: ignore[arg-type]

    def applies(self, offset_s: float, workflow: str) -> bool:
        return offset_s >= self.at_s and self.workflow in (None, workflow)


def parse_incident(spec: str) -> Incident:
    """``KIND@SECONDS[:WORKFLOW][=MAGNITUDE]`` -> :class:`Incident`."""
    match = _SPEC.match(spec.strip())
    if match is None:
        raise IncidentSpecError(
            f"bad incident {spec!r}; expected KIND@SECONDS[:WORKFLOW][=MAGNITUDE], "
            "for example token-drift@300:support-chat=2.5"
        )
    magnitude = match["magnitude"]
    return Incident(
        kind=match["kind"],
        at_s=float(match["at"]),
        workflow=match["workflow"],
        magnitude=float(magnitude) if magnitude is not None else None,
    )


@dataclass(frozen=True, slots=True)
class Effects:
    """What the active incidents change for one request; neutral values mean normal."""

    output_token_factor: float = 1.0
    truncate_factor: float | None = None  # output-length: shorter, mostly cut at the limit
    retry_probability: float | None = None
    kv_pressure: float | None = None
    unapproved_share: float = 0.0
    cost_factor: float = 1.0
    canary_share: float = 0.0

    @classmethod
    def active(cls, incidents: Iterable[Incident], offset_s: float, workflow: str) -> Effects:
        output, cost = 1.0, 1.0
        truncate: float | None = None
        retry: float | None = None
        kv: float | None = None
        unapproved, canary = 0.0, 0.0
        for incident in incidents:
            if not incident.applies(offset_s, workflow):
                continue
            v = incident.value
            if incident.kind == TOKEN_DRIFT:
                output *= v
            elif incident.kind == OUTPUT_LENGTH:
                truncate = v if truncate is None else truncate * v
            elif incident.kind == RETRY_STORM:
                retry = max(retry or 0.0, v)
            elif incident.kind == KV_PRESSURE:
                kv = max(kv or 0.0, v)
            elif incident.kind == UNAPPROVED_MODEL:
                unapproved = max(unapproved, v)
            elif incident.kind == COST_RUNAWAY:
                cost *= v
            elif incident.kind == CANARY:
                canary = max(canary, v)
        return cls(output, truncate, retry, kv, unapproved, cost, canary)


NO_EFFECTS: Final = Effects()
