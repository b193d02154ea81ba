"""Events of hostile spans through the monitor, as ``driftline replay`` drives it.

A background stream (which drifts when hypothesis says so) warms the detectors of a workflow
with tight budgets and a model allow list, so alerts open, update and resolve; hostile
events join it in the same workflow and in workflows of their own. The monitor never raises,
and every transition, every PagerDuty body and every webhook body is strict JSON (no NaN or
infinity: PagerDuty answers 400 and the page is lost).
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

from driftline.commands.replay import replay, to_json_line
from driftline.config import AlertSettings, DetectorSettings, Settings, WorkflowSettings
from driftline.streams.monitor import Monitor
from driftline.streams.notifier import payload
from driftline.streams.notifier.webhook import alertmanager_body, slack_body
from driftline.streams.pipeline import OfflinePipeline
from tests.fuzz.checks import strict_json
from tests.fuzz.profiles import fuzz_settings
from tests.fuzz.strategies import ARRIVAL_NS, encoded, traces_message
from tests.utils.events import make_event

pytestmark = pytest.mark.fuzz

WORKFLOW = "support-triage"  # the workflow tests/utils/otlp_factory.driftline_attributes names
_STEP_US = 2_000_000
_TIGHT_BUDGETS: dict[str, Any] = {
    "max_tokens_per_request": 3000,
    "max_retries_per_request": 1,
    "max_loop_depth": 3,
    "max_amplification": 2.0,
    "tokens_per_window": 50_000,
    "cost_usd_per_window": 0.05,
    "window_s": 600.0,
    "monthly_cost_usd": 1.0,
}
SETTINGS = Settings(
    detectors=DetectorSettings(warmup_events=20, window_events=20, arl0_events=1000),
    alerts=AlertSettings(hold_down_s=60.0),
    workflows={
        "*": WorkflowSettings(allowed_models=["gpt-4o"], budgets=_TIGHT_BUDGETS),
    },
)


def _background(seed: int, count: int, shift_at: int, factor: float) -> list[dict[str, Any]]:
    """A workflow's steady traffic that shifts by ``factor`` from event ``shift_at`` on."""
    rng = random.Random(seed)
    start = ARRIVAL_NS // 1000 - count * _STEP_US
    events = []
    for i in range(count):
        scale = factor if i >= shift_at else 1.0
        tokens = max(1, int(rng.lognormvariate(6.0, 0.3) * scale))
        events.append(
            make_event(
                trace_id=f"bg{seed}-{i}",
                span_id=f"bg{i:014d}",
                workflow=WORKFLOW,
                start_ts=start + i * _STEP_US,
                end_ts=start + i * _STEP_US + 900_000,
                input_tokens=tokens,
                output_tokens=tokens // 4,
                latency_ms=float(tokens) * 2.0,
                bundle_id="b1",
            )
        )
    return events


def _hostile_events(messages: list[TracesData], as_json: bool) -> tuple[list[dict], list[dict]]:
    pipeline = OfflinePipeline()
    for message in messages:
        pipeline.feed(encoded(message, as_json))
    result = pipeline.finish()
    return result.events, result.traces


@fuzz_settings(share=0.5)
@given(
    messages=st.lists(traces_message(), min_size=1, max_size=3),
    as_json=st.booleans(),
    seed=st.integers(0, 2**16),
    count=st.integers(0, 160),
    shift_at=st.integers(0, 160),
    factor=st.sampled_from([1.0, 3.0, 0.2, 40.0]),
)
def test_every_alert_transition_and_page_is_strict_json(
    messages: list[TracesData],
    as_json: bool,
    seed: int,
    count: int,
    shift_at: int,
    factor: float,
) -> None:
    events, traces = _hostile_events(messages, as_json)
    events += _background(seed, count, shift_at, factor)

    transitions = replay(SETTINGS, events, traces, include_updates=True, monitor=Monitor(SETTINGS))

    for record in transitions:
        strict_json(record)
        json.loads(to_json_line(record), parse_constant=_refuse)
        body = (
            payload.resolve_event(record)
            if record["transition"] == "resolve"
            else payload.trigger_event(record)
        )
        json.loads(payload.encode_body(body, "routing-key"), parse_constant=_refuse)
        strict_json(slack_body(record))
        strict_json(alertmanager_body(record, "driftline"))


def _refuse(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")
