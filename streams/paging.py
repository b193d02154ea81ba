"""The paging stage: ``llm_alerts`` --notify--> PagerDuty / webhooks, delivery log --> ClickHouse.

State: the changelog-backed table ``notifier_ledger``, one value per dedup key,
``{<route id>:<dedup key>: <last event delivered on that route>}`` (see
:mod:`streams.notifier.ledger`). Each entry holds the ``llm_alerts`` offset of the
transition it delivered, so a re-read of the topic after a crash or a rebalance (offsets
are committed after the deliveries, so the batches since the last commit come again)
pages nothing twice, even an older alert of the same dedup key.

Durability: an entry is written to the table's changelog as soon as its delivery was
accepted, before the next send, and acknowledged by the broker within milliseconds
(:class:`streams.checkpoints.CheckpointedTable`). Through the worker's shared producer the entry
would wait behind everything else buffered: under a backlog that took seconds, and a worker
killed in those seconds paged again after its restart. What remains is the time of
the HTTP exchange itself plus that write: a worker killed then pages once more, and PagerDuty
folds the repeat into the same incident by ``dedup_key``. Paging is at least once by design:
a page must never be lost to a crash between the HTTP response and the ledger write.

Entries of alerts resolved longer than ``pagerduty.ledger_retention_s`` ago are deleted, so
the table stays bounded by the alerts of that period.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

from driftline.schemas.alert import TRANSITION_FIELDS
from driftline.schemas.event import from_wire
from driftline.streams.checkpoints import CheckpointedTable, Recovered
from driftline.streams.kafka import page_path_wait_s
from driftline.streams.notifier.ledger import SOURCE_OFFSET

if TYPE_CHECKING:
    from driftline.streams.runtime import Pipeline
    from driftline.streams.stages import GovernanceState

__all__ = ["NOTIFIER_LEDGER_TABLE", "add_notify", "owned_transitions"]

log = logging.getLogger(__name__)

NOTIFIER_LEDGER_TABLE: Final = "notifier_ledger"
PRUNE_INTERVAL_S: Final = 600.0


def owned_transitions(
    batch: Iterable[tuple[int, int, dict[str, Any]]], owned: set[int]
) -> list[dict[str, Any]]:
    """Transitions of ``(partition, offset, transition)`` to deliver, each with its offset.

    A partition this worker no longer owns (revoked while its messages were buffered) is
    left to the new owner, which reads it again from the committed offset.

    >>> owned_transitions([(0, 4, {"alert_id": "a"}), (1, 2, {"alert_id": "b"})], {0})
    [{'alert_id': 'a', 'source_offset': 4}]
    """
    return [
        {**transition, SOURCE_OFFSET: offset}
        for partition, offset, transition in batch
        if partition in owned
    ]


def add_notify(p: Pipeline, state: GovernanceState) -> None:
    """Register the ``notify`` agent, its ledger checkpoints, restore and pruning."""
    from driftline.streams.codec import loads
    from driftline.streams.stages import store_deliveries

    notifier = state.notifier
    assert notifier is not None
    table = p.tables[NOTIFIER_LEDGER_TABLE]
    retention_s = p.settings.pagerduty.ledger_retention_s

    def restore_ledger(recovered: Recovered) -> None:
        entries: dict[str, dict[str, Any]] = {}
        for value in recovered.values.values():
            if value:
                entries.update(value)
        if entries:
            notifier.import_state(entries)
            log.info("notifier: resumed delivery state of %d alerts", len(entries))

    ledger = CheckpointedTable(p, table, p.topics.llm_alerts.get_topic_name(), restore_ledger)

    async def checkpoint_delivery(entry: dict[str, Any]) -> None:
        for ledger_key, value in entry.items():
            key = str(value.get("dedup_key", "")).encode()
            merged = dict(table.get(key) or {})
            merged[ledger_key] = value
            await ledger.write([(key, merged)])

    notifier.on_delivered = checkpoint_delivery

    @p.app.agent(p.topics.llm_alerts, name="notify")
    async def notify(stream: Any) -> None:
        async for batch in stream.take_events(
            p.settings.streams.batch_max_messages, within=page_path_wait_s(p.settings.streams)
        ):
            items = [
                (m.partition, m.offset, from_wire(loads(e.value), TRANSITION_FIELDS))
                for e in batch
                for m in (e.message,)
            ]
            records = await notifier.deliver(owned_transitions(items, ledger.assigned_now()))
            notifier.ledger.pop_changes()  # each was checkpointed when it was delivered
            for record in records:
                p.counters[f"pages.{record['outcome']}"] += 1
            await store_deliveries(state, records)

    @p.app.timer(PRUNE_INTERVAL_S, name="prune_ledger")
    async def prune_ledger() -> None:
        cutoff_us = int((time.time() - retention_s) * 1_000_000)
        gone = notifier.ledger.prune(cutoff_us)
        if not gone:
            return
        remaining = notifier.ledger.dedup_keys()
        changes: list[tuple[bytes, Any]] = []
        for dedup_key in {key.split(":", 1)[1] for key in gone}:
            key = dedup_key.encode()
            kept = {k: v for k, v in (table.get(key) or {}).items() if k not in gone}
            changes.append((key, kept if dedup_key in remaining and kept else None))
        await ledger.write(changes)
        log.info("notifier: forgot %d deliveries of alerts resolved long ago", len(gone))
