"""Severity on a metric as steady as the tolerance (a fixed prompt's input tokens): its
reference sd is at the floor, 2.5% of a change, so severity is judged beyond the
tolerance, not in those sd alone (a 6% change is a warning, a new prompt x4 an error)."""

from __future__ import annotations

import pytest

from driftline.streams.monitor import Monitor
from tests.unit.test_monitor import T0, S, event, run, settings


def first_severity(factor: float) -> str:
    tokens = [(400 + i % 7) * (factor if i >= 1500 else 1.0) for i in range(3000)]
    events = [event(i, T0 + i * S, t) for i, t in enumerate(tokens)]
    out = run(Monitor(settings(["input_tokens"])), events)
    opened = [t for t in out if t["transition"] == "open" and t["metric"] == "input_tokens"]
    assert opened, "the change was not found"
    return str(opened[0]["severity"])


@pytest.mark.parametrize(("factor", "severity"), [(1.06, "warning"), (4.0, "error")])
def test_severity_on_a_fixed_prompt(factor: float, severity: str) -> None:
    assert first_severity(factor) == severity
