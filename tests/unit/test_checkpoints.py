"""The one recovery path of checkpointed state (streams/checkpoints.py), on stand-ins for
the Faust app and table: what a stage is given after a rebalance, and what a failed read of
the changelog's tail leaves."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest

from driftline.streams import checkpoints
from driftline.streams.checkpoints import CheckpointedTable, Recovered


class Signal:
    def connect(self, receiver: Any) -> None:
        pass


class Pipeline:
    """What CheckpointedTable uses of streams.runtime.Pipeline."""

    def __init__(self) -> None:
        self.assigned: set[int] = set()
        self.steps: list[Callable[[Any], Awaitable[None]]] = []
        self.app = SimpleNamespace(
            assignor=SimpleNamespace(
                assigned_actives=lambda: [
                    SimpleNamespace(topic="src", partition=n) for n in self.assigned
                ]
            ),
            on_before_shutdown=Signal(),
        )

    def after_rebalance(self, step: Callable[[Any], Awaitable[None]]) -> None:
        self.steps.append(step)

    def rebalance(self, assigned: set[int]) -> None:
        self.assigned = assigned
        for step in self.steps:
            asyncio.run(step(None))


class Table:
    def __init__(self, data: dict[bytes, Any]) -> None:
        self.data = data

    def items(self) -> Any:
        return self.data.items()


def test_the_stage_gets_the_table_completed_by_the_tail_of_the_partitions_taken_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tails: list[set[int]] = []

    def tail(p: Any, table: Any, partitions: set[int]) -> dict[bytes, bytes | None]:
        tails.append(partitions)
        return {b"b": b'{"v": 2}', b"gone": None, b"\x00changelog-fence": None}

    monkeypatch.setattr(checkpoints, "changelog_tail", tail)
    p, table = Pipeline(), Table({b"a": {"v": 1}, b"b": {"v": 1}, b"gone": {"v": 0}})
    seen: list[Recovered] = []
    CheckpointedTable(p, table, "src", seen.append)  # type: ignore[arg-type]
    p.rebalance({0, 1})
    assert tails == [{0, 1}]
    assert seen[0].values == {b"a": {"v": 1}, b"b": {"v": 2}}
    assert (seen[0].owned, seen[0].moved) == ({0, 1}, {0, 1})
    assert table.data == seen[0].values  # later readers of the table see the tail too
    p.rebalance({1, 2})
    assert tails[-1] == {2} and (seen[1].owned, seen[1].moved) == ({1, 2}, {2})


def test_a_failed_tail_read_releases_what_moved_away_and_is_read_again_next_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[set[int]] = []

    def failing_tail(p: Any, table: Any, partitions: set[int]) -> dict[bytes, bytes | None]:
        calls.append(partitions)
        raise RuntimeError("broker gone")

    monkeypatch.setattr(checkpoints, "changelog_tail", failing_tail)
    p = Pipeline()
    released: list[frozenset[int]] = []
    restored: list[Recovered] = []
    checkpointed = CheckpointedTable(
        p,  # type: ignore[arg-type]
        Table({}),
        "src",
        restored.append,
        release=released.append,
    )
    with pytest.raises(RuntimeError):
        p.rebalance({3})
    assert released == [frozenset({3})] and restored == []
    assert checkpointed.owned == frozenset()  # not taken over: the next restore reads it
    monkeypatch.setattr(checkpoints, "changelog_tail", lambda *args: {})
    p.rebalance({3})
    assert restored[0].moved == {3} and checkpointed.owned == {3}
