"""The steps a worker runs when a rebalance completes: every state restored, then ready.

Faust's ``on_rebalance_complete`` keeps its receivers in a set, so receivers connected one
by one ran in an order that changed between processes: the readiness file was written
before the monitor had restored its state in some runs, events then flowed into the
monitor being replaced, and were lost to detection.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from driftline.config import Settings
from driftline.streams.app import create_app


def test_readiness_is_signalled_after_every_state_is_restored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAGERDUTY_ROUTING_KEY", "R" * 32)  # with a pager: its ledger too
    settings = Settings()
    pipeline = create_app(
        settings,
        bootstrap_servers="127.0.0.1:1",  # never connected to: the app is only built
        ready_file=tmp_path / "ready",
        with_governance=True,
    )
    steps = pipeline.rebalance_steps
    assert steps[-1].__name__ == "signal_ready"
    # Every checkpointed table restores through streams.checkpoints, before the readiness.
    restored = [step.__self__.table.name for step in steps[:-1] if hasattr(step, "__self__")]
    tables = ["engine_conditions", "monitor_state", "notifier_ledger", "open_traces"]
    assert sorted(restored) == tables, steps
    receivers = list(pipeline.app.on_rebalance_complete.iter_receivers(pipeline.app))
    assert len(receivers) == 1, "one receiver runs the steps in order"
