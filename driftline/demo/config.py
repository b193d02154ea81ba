"""The demo's ``driftline.toml``, written into its data directory at start.

Tuned so a two-minute run shows every scripted incident: small warm-up and windows (the
baselines are ready within about 15 s at the demo's traffic rate), a short hold-down (an
alert resolves about 20 s after its incident ends), every model each simulated workflow
may use listed as allowed, and budgets placed well above normal traffic but below the
incidents (normal agent-planner spend is about 7-8 USD a minute at 50 requests/s, at most
16.3 over two minutes in a 30-minute simulation; a runaway spends about 50 a minute).

Monthly budgets (``monthly_cost_usd``) give the cost dashboard's burn-rate panels real data
without paging: the fast pair pages only when the last hour's spend passes a fiftieth of the
budget, and each budget is over 50 times what its workflow spends in a ten-minute run (about
300 USD for agent-planner with its runaway, 80 for rag-search, 25 for support-chat). The panels
show the burn rates under the paging lines. batch-summarizer's self-hosted models have no
price, so it has no spend to budget.

The cost window is two minutes, not one: budget windows are summed in calendar-minute
buckets and a long agent trace's calls carry their own (earlier) times, so a one-minute
window sees a runaway late when it starts near a minute boundary.

The worker's ``/metrics`` (read by the live view) is on a port free when the file is written,
not the default 9464, so the view never reads another worker running on the same host.

The file is an ordinary configuration: ``driftline --config <data-dir>/driftline.toml sql``
or ``report`` read the demo's store with it after the run.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Final

from driftline.simulator.workflows import agent_planner, batch_summarizer, rag_search, support_chat

CONFIG_NAME: Final = "driftline.toml"
RATE_PER_S: Final = 50.0
HOLD_DOWN_S: Final = 20.0
WARMUP_EVENTS: Final = 250
WINDOW_EVENTS: Final = 150
BATCH_SECONDS: Final = 1.0
TRACE_GRACE_S: Final = 1.0
AGENT_COST_WINDOW_S: Final = 120
AGENT_COST_PER_WINDOW_USD: Final = 20.0
RAG_MAX_RETRIES: Final = 2
MONTHLY_BUDGETS_USD: Final = {
    "agent-planner": 20_000.0,
    "rag-search": 8_000.0,
    "support-chat": 3_000.0,
}


def allowed_models() -> dict[str, list[str]]:
    """Per workflow, the approved models under both names the providers answer with
    (``gpt-4o-mini`` is answered as ``gpt-4o-mini-2024-07-18``)."""
    out = {}
    for module in (support_chat, rag_search, agent_planner, batch_summarizer):
        snapshots: dict[str, str] = getattr(module, "SNAPSHOTS", {})
        names = list(module.APPROVED_MODELS)
        names += [snapshots[m] for m in module.APPROVED_MODELS if m in snapshots]
        out[module.NAME] = names
    return out


def _toml_list(values: list[str]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def free_port() -> int:
    """A TCP port nothing listens on at 127.0.0.1 now (the kernel's pick)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def demo_config_text(
    data_dir: Path, consumer_group: str = "driftline-demo", metrics_port: int = 0
) -> str:
    """The file's text; ``metrics_port`` 0 turns the worker's /metrics off."""
    allowed = allowed_models()
    workflows = "\n".join(
        f'[workflows."{name}"]\nallowed_models = {_toml_list(models)}\n'
        for name, models in allowed.items()
    )
    budgets = {name: [f"monthly_cost_usd = {usd}"] for name, usd in MONTHLY_BUDGETS_USD.items()}
    budgets["rag-search"].append(f"max_retries_per_request = {RAG_MAX_RETRIES}")
    budgets["agent-planner"] += [
        f"cost_usd_per_window = {AGENT_COST_PER_WINDOW_USD}",
        f"window_s = {AGENT_COST_WINDOW_S}",
    ]
    budget_tables = "\n".join(
        f'[workflows."{name}".budgets]\n' + "\n".join(lines) + "\n"
        for name, lines in budgets.items()
    )
    return f"""# Written by `driftline demo`; a fresh copy at every run.

[kafka]
partitions = 4
consumer_group = "{consumer_group}"

[collector]
grpc_port = 0  # free ports: the demo may run beside another stack
http_port = 0
batch_timeout_ms = 100

[worker]
metrics_port = {metrics_port}  # /metrics, /healthz, /readyz on 127.0.0.1; read by the live view

[embedded]
data_dir = {json.dumps(str(data_dir))}
start_timeout_s = 60

[store]
batch_seconds = {BATCH_SECONDS}
baseline_snapshot_s = 5  # the run is minutes long: a score point every 5 s, not every minute

[streams]
trace_grace_s = {TRACE_GRACE_S}
trace_timeout_s = 10
batch_max_wait_s = 0.2

[detectors]
warmup_events = {WARMUP_EVENTS}
window_events = {WINDOW_EVENTS}
# Every model a workflow calls is its own bundle: keep them all.
max_bundles_per_workflow = 8
canary_active_s = 60
# The run is short: start baselines 40 s after a bundle appears, not 60 s (agent traces'
# early calls differ from steady traffic for ~30 s; support-chat must be armed before its
# scripted drift at 72 s).
settle_s = 40

[alerts]
hold_down_s = {HOLD_DOWN_S}

{workflows}
{budget_tables}"""


def write_demo_config(data_dir: Path, consumer_group: str = "driftline-demo") -> Path:
    path = data_dir / CONFIG_NAME
    path.write_text(demo_config_text(data_dir, consumer_group, free_port()))
    return path
