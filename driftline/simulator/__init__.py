"""Realistic GenAI traffic through the OpenTelemetry SDK, with injectable incidents.

Python API::

    from driftline.simulator import Simulator, SimulatorConfig, GroundTruth, parse_incident

    config = SimulatorConfig(rate=20, duration_s=3600, seed=7, clock="simulated",
                             incidents=(parse_incident("token-drift@1800:support-chat"),))
    truth = GroundTruth()
    result = Simulator(config).run([some_span_exporter], truth)
    truth.events  # the normalized events that were sent
"""

from __future__ import annotations

from .engine import SERVERS as ENGINE_SERVERS
from .exporters import (
    FanoutExporter,
    OtlpFileExporter,
    collector_endpoint,
    network_exporter,
    network_metric_exporter,
)
from .ground_truth import GroundTruth, trace_events
from .incidents import INCIDENT_KINDS, Incident, IncidentSpecError, parse_incident
from .plan import LlmCall, SpanPlan, TraceContext, TracePlan
from .simulator import SimulationResult, Simulator, SimulatorConfig
from .workflows import WORKFLOW_NAMES, WORKFLOWS

__all__ = [
    "ENGINE_SERVERS",
    "INCIDENT_KINDS",
    "WORKFLOWS",
    "WORKFLOW_NAMES",
    "FanoutExporter",
    "GroundTruth",
    "Incident",
    "IncidentSpecError",
    "LlmCall",
    "OtlpFileExporter",
    "SimulationResult",
    "Simulator",
    "SimulatorConfig",
    "SpanPlan",
    "TraceContext",
    "TracePlan",
    "collector_endpoint",
    "network_exporter",
    "network_metric_exporter",
    "parse_incident",
    "trace_events",
]
