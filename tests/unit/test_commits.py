"""streams.commits: a partition's commit never passes an offset no agent has finished.

On Faust's own consumer (the aiokafka driver, not started: the commit choice and the
bookkeeping are in-memory; only the broker's seek is recorded instead of sent).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import faust
import pytest
from faust.types import TP

from driftline.streams.commits import MAX_REREADS, CommitGuard

TOPIC = TP("llm_events", 2)
CHANGELOG = TP("driftline-monitor_state-changelog", 0)


@pytest.fixture
def consumer() -> Any:
    app = faust.App("commit-guard", broker="kafka://127.0.0.1:1", autodiscover=False)
    return app.consumer


def acknowledge(consumer: Any, *offsets: int, tp: TP = TOPIC) -> None:
    for offset in offsets:
        consumer._acked[tp].append(offset)
        consumer._acked_index[tp].add(offset)


def test_faust_alone_commits_past_an_unacknowledged_head(consumer: Any) -> None:
    # The defect the guard exists for (faust-streaming #606): committed 2585 is the next
    # offset to read; 2586-2589 acknowledged, 2585 not, and Faust commits 2590.
    consumer._committed_offset[TOPIC] = 2585
    acknowledge(consumer, 2586, 2587, 2588, 2589)
    assert consumer._new_offset(TOPIC) == 2590


def test_the_commit_holds_until_the_head_is_acknowledged(consumer: Any) -> None:
    counters: Counter[str] = Counter()
    guard = CommitGuard(consumer, counters)
    guard.install()
    consumer._committed_offset[TOPIC] = 2585
    acknowledge(consumer, 2586, 2587, 2588, 2589)
    assert consumer._new_offset(TOPIC) is None
    assert consumer._new_offset(TOPIC) is None
    assert counters["consumer.commits_held"] == 1  # one hold, however often it is asked
    assert guard.held[TOPIC][0] == 2585
    acknowledge(consumer, 2585)
    assert consumer._new_offset(TOPIC) == 2590
    assert TOPIC not in guard.held


def test_a_run_from_the_head_commits_as_before(consumer: Any) -> None:
    CommitGuard(consumer, Counter()).install()
    consumer._committed_offset[TOPIC] = 40
    acknowledge(consumer, 40, 41, 42, 44)
    assert consumer._new_offset(TOPIC) == 43


def test_offsets_a_fetch_jumped_over_on_a_changelog_let_the_commit_pass(consumer: Any) -> None:
    # A fetch that jumped from 40 to 43 on a compacted changelog: Faust's gap, records gone.
    CommitGuard(consumer, Counter()).install()
    consumer._committed_offset[CHANGELOG] = 40
    acknowledge(consumer, 40, tp=CHANGELOG)
    asyncio.run(consumer._add_gap(CHANGELOG, 41, 42))
    acknowledge(consumer, 43, 44, tp=CHANGELOG)
    assert consumer._new_offset(CHANGELOG) == 45


def test_offsets_a_fetch_jumped_over_on_a_stream_topic_are_read_again(consumer: Any) -> None:
    # The fetch returned 42 after 40: 41 is on the topic (nothing is compacted or written in
    # transactions there) but was not returned; counting it as read would commit past it.
    counters: Counter[str] = Counter()
    guard = CommitGuard(consumer, counters, reread_after_s=0.0)
    guard.install()
    consumer._committed_offset[TOPIC] = 40
    acknowledge(consumer, 40)
    asyncio.run(consumer._add_gap(TOPIC, 41, 42))
    acknowledge(consumer, 42, 43)
    assert counters["consumer.offsets_skipped_by_fetch"] == 1
    assert consumer._new_offset(TOPIC) == 41  # the run before the skipped offset
    consumer._committed_offset[TOPIC] = 41  # as Faust records its commit
    assert consumer._new_offset(TOPIC) is None  # and there it holds
    sought: list[tuple[Any, int]] = []

    async def seek(tp: Any, offset: int) -> None:
        sought.append((tp, offset))

    consumer._seek = seek
    asyncio.run(guard.reread_stuck(1, rebalancing=False, assigned={TOPIC}))
    assert sought == [(TOPIC, 41)]


class Message:
    def __init__(self, offset: int, generation: int) -> None:
        self.tp, self.offset, self.generation_id = TOPIC, offset, generation


def test_before_any_commit_a_message_in_hands_holds_the_commit(consumer: Any) -> None:
    CommitGuard(consumer, Counter()).install()
    in_hands = Message(7, generation=1)
    consumer._unacked_messages.add(in_hands)
    acknowledge(consumer, 8, 9)
    assert consumer._new_offset(TOPIC) is None
    consumer._unacked_messages.discard(in_hands)
    acknowledge(consumer, 7)
    assert consumer._new_offset(TOPIC) == 10


def test_a_head_nobody_holds_is_read_again_a_head_in_hands_is_not(consumer: Any) -> None:
    seeks: list[tuple[Any, int]] = []

    async def seek(tp: Any, offset: int) -> None:
        seeks.append((tp, offset))

    consumer._seek = seek
    counters: Counter[str] = Counter()
    guard = CommitGuard(consumer, counters, reread_after_s=0.0)
    guard.install()
    consumer._committed_offset[TOPIC] = 2585
    acknowledge(consumer, 2586)
    assert consumer._new_offset(TOPIC) is None
    consumer._read_offset[TOPIC] = 2586

    # The head in an agent's hands (this generation): nothing to do yet.
    in_hands = Message(2585, generation=3)
    consumer._unacked_messages.add(in_hands)
    asyncio.run(guard.reread_stuck(3, rebalancing=False, assigned={TOPIC}))
    assert seeks == []
    # While rebalancing, Faust seeks every partition itself.
    consumer._unacked_messages.discard(in_hands)
    asyncio.run(guard.reread_stuck(3, rebalancing=True, assigned={TOPIC}))
    assert seeks == []
    # Held by a message from before the last rebalance: it will never be acknowledged.
    consumer._unacked_messages.add(Message(2585, generation=2))
    asyncio.run(guard.reread_stuck(3, rebalancing=False, assigned={TOPIC}))
    assert seeks == [(TOPIC, 2585)]
    assert consumer._read_offset[TOPIC] == 2585  # the fetch loop hands 2585 on again
    assert counters["consumer.partitions_reread"] == 1


def test_a_partition_no_longer_assigned_or_committed_past_is_forgotten(consumer: Any) -> None:
    guard = CommitGuard(consumer, Counter(), reread_after_s=0.0)
    guard.install()
    consumer._committed_offset[TOPIC] = 5
    acknowledge(consumer, 6)
    consumer._new_offset(TOPIC)
    asyncio.run(guard.reread_stuck(1, rebalancing=False, assigned=set()))
    assert guard.held == {}


def test_a_head_that_reads_never_hand_on_is_counted_as_read(consumer: Any) -> None:
    async def seek(tp: Any, offset: int) -> None:
        pass

    consumer._seek = seek
    counters: Counter[str] = Counter()
    guard = CommitGuard(consumer, counters, reread_after_s=0.0)
    guard.install()
    consumer._committed_offset[TOPIC] = 40  # a transaction marker: never a message
    acknowledge(consumer, 41, 42)
    for _ in range(MAX_REREADS):
        assert consumer._new_offset(TOPIC) is None
        asyncio.run(guard.reread_stuck(1, rebalancing=False, assigned={TOPIC}))
    assert counters["consumer.partitions_reread"] == MAX_REREADS
    assert counters["consumer.offsets_counted_read"] == 0
    asyncio.run(guard.reread_stuck(1, rebalancing=False, assigned={TOPIC}))
    assert counters["consumer.offsets_counted_read"] == 1
    assert consumer._new_offset(TOPIC) == 43
