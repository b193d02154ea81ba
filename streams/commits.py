"""Faust never commits past an offset its agents have not finished.

Faust commits a partition up to the end of the run of acknowledged offsets, and meant to
hold when that run does not start at the committed position. Its test
(``Consumer._new_offset``) is one off: the committed offset C is the next one to read, yet a
run starting at C + 1 passes it (faust-streaming issues #606 and #312). Offset C is then
committed unacknowledged: lost if the worker stops before C is finished, and lost for good
when C was never handed to an agent at all, as happens to a message fetched before a
rebalance and dropped by the fetch loop after it (issues #221 and #596). Seen here as a whole
``llm_events`` message committed without being stored, in 2 of 10 runs of
``bench/bench_backlog_memory.py``.

Three guards, installed by :func:`guard_commits`:

- offsets a fetch jumped over are counted as read (Faust's gap bookkeeping) only on a
  changelog: compacted, its gaps are records removed for good. driftline's stream topics
  are neither compacted nor written in transactions, so a jump there is a record the fetch
  did not return: tansu was seen returning offset C + 1 to a fetch from C, with C on the
  topic (``bench/bench_backlog_memory.py``: a whole ``llm_events`` message of 2,312 events
  never stored while the worker's commit passed it). It is logged and left unacknowledged;
- the commit holds at C until C itself is acknowledged, or counted as read;
- a partition held for ``REREAD_AFTER_S`` while later offsets are acknowledged, and whose
  message at C is in no agent's hands, is read again from C. Every agent's writes are
  idempotent (insert tokens, applied offsets, the delivery ledger), so a message read twice
  is stored and applied once; without the second guard such a partition would hold its
  commit until the next rebalance or restart, and its lost message would wait as long.
  Faust's gap bookkeeping never covers the committed offset itself, so a head that is not a
  record (a transaction marker, a compacted record: not on driftline's own topics) would
  hold for ever; after ``MAX_REREADS`` reads from it that never handed it to an agent it is
  counted as read, with a warning.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from time import monotonic
from typing import Any, Final

log = logging.getLogger(__name__)

#: How long a commit may hold on a head nobody is working on before the partition is read
#: again from it. Later offsets acknowledged means every agent has passed the head already,
#: so a few commit intervals is plenty; a message still in an agent's hands never counts.
REREAD_AFTER_S: Final = 15.0
MAX_REREADS: Final = 3
#: Faust names a table's changelog topic ``<app id>-<table>-changelog``.
CHANGELOG_SUFFIX: Final = "-changelog"
CHECK_INTERVAL_S: Final = 5.0


@dataclass
class CommitGuard:
    """Wraps one Faust consumer's commit choice; :meth:`reread_stuck` runs on a timer."""

    consumer: Any
    counters: Counter[str]
    reread_after_s: float = REREAD_AFTER_S
    # tp -> (the committed offset the commit holds on, since when in monotonic seconds,
    # reads from it so far)
    held: dict[Any, tuple[int, float, int]] = field(default_factory=dict)
    _faust_new_offset: Any = None
    _faust_add_gap: Any = None

    def install(self) -> None:
        self._faust_new_offset = self.consumer._new_offset
        self.consumer._new_offset = self.new_offset
        self._faust_add_gap = self.consumer._add_gap
        self.consumer._add_gap = self.add_gap

    async def add_gap(self, tp: Any, offset_from: int, offset_to: int) -> None:
        """Faust's gap bookkeeping: ``offset_from`` up to the message that arrived at
        ``offset_to``; counted as read on a changelog only (module docstring)."""
        if tp.topic.endswith(CHANGELOG_SUFFIX):
            await self._faust_add_gap(tp, offset_from, offset_to)
            return
        log.warning(
            "offsets %d-%d of %s[%d] were skipped by the fetch; not counted as read: the "
            "commit holds at the first and the partition is read again from it",
            offset_from,
            offset_to - 1,
            tp.topic,
            tp.partition,
        )
        self.counters["consumer.offsets_skipped_by_fetch"] += offset_to - offset_from

    def new_offset(self, tp: Any) -> int | None:
        """Faust's next commit for ``tp``, or None while its head is not acknowledged."""
        consumer = self.consumer
        acked = consumer._acked[tp]
        committed = consumer._committed_offset[tp]
        if acked:
            head = committed if committed is not None else self._lowest_in_hands(tp)
            if head is not None and head < min(acked) and not self._counted_read(tp, head):
                held = self.held.get(tp)
                if held is None or held[0] != head:
                    self.held[tp] = (head, monotonic(), 0)
                    self.counters["consumer.commits_held"] += 1
                return None
        self.held.pop(tp, None)
        result: int | None = self._faust_new_offset(tp)
        return result

    def _counted_read(self, tp: Any, offset: int) -> bool:
        # Faust moves gap offsets into `acked` inside its own _new_offset; until then they
        # are intervals that count as read.
        return bool(self.consumer._gap[tp].at(offset))

    def _in_hands_now(self) -> list[Any] | None:
        """The messages agents hold (None if the set kept changing while it was read:
        acknowledgements may come from another thread)."""
        for _ in range(3):
            try:
                return list(self.consumer._unacked_messages)
            except RuntimeError:  # "set changed size during iteration"
                continue
        return None

    def _lowest_in_hands(self, tp: Any) -> int | None:
        messages = self._in_hands_now()
        if messages is None:
            return -1  # unknown: hold this round
        return min((m.offset for m in messages if m.tp == tp), default=None)

    def _in_hands(self, tp: Any, offset: int, generation: int) -> bool:
        messages = self._in_hands_now()
        return messages is None or any(
            m.tp == tp and m.offset == offset and m.generation_id == generation for m in messages
        )

    async def reread_stuck(self, generation: int, rebalancing: bool, assigned: set[Any]) -> None:
        """Read again from the head of every partition held past ``reread_after_s``."""
        if rebalancing or not self.consumer.flow_active:
            return
        now = monotonic()
        for tp, (offset, since, reads) in list(self.held.items()):
            if tp not in assigned or self.consumer._committed_offset[tp] != offset:
                self.held.pop(tp, None)
                continue
            if now - since < self.reread_after_s or self._in_hands(tp, offset, generation):
                continue
            if reads >= MAX_REREADS:
                log.warning(
                    "%s[%d]: offset %d was never handed to an agent in %d reads from it; "
                    "counted as read (not a record: a transaction marker or compacted)",
                    tp.topic,
                    tp.partition,
                    offset,
                    reads,
                )
                self.counters["consumer.offsets_counted_read"] += 1
                self.consumer._acked[tp].append(offset)
                self.consumer._acked_index[tp].add(offset)
                self.held.pop(tp, None)
                continue
            log.warning(
                "%s[%d]: offset %d is not acknowledged and no agent holds it, while later "
                "offsets are (held %.0f s); reading the partition again from %d",
                tp.topic,
                tp.partition,
                offset,
                now - since,
                offset,
            )
            self.counters["consumer.partitions_reread"] += 1
            self.held[tp] = (offset, now, reads + 1)
            await self.consumer.seek(tp, offset)


def guard_commits(app: Any, counters: Counter[str]) -> CommitGuard:
    """Install the guard on ``app``'s consumer and its re-read timer on ``app``."""
    guard = CommitGuard(app.consumer, counters)
    guard.install()

    @app.timer(CHECK_INTERVAL_S, name="reread_stuck_partitions")
    async def reread_stuck_partitions() -> None:
        consumer = app.consumer
        await guard.reread_stuck(
            app.consumer_generation_id, bool(app.rebalancing), consumer.assignment()
        )

    return guard
