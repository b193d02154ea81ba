"""StoreWriter: the stages of a worker share one store, opened once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from driftline.store import StoreError
from driftline.streams import stages


class _Store:
    def close(self) -> None:
        pass


class _Opener:
    """Opens a stand-in store after ``failures`` refusals, and counts every attempt."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts = 0
        self.opened: list[_Store] = []

    def __call__(self) -> Any:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise StoreError("simulated outage")
        store = _Store()
        self.opened.append(store)
        return store


def test_stages_waiting_for_the_store_share_one_open(monkeypatch: pytest.MonkeyPatch) -> None:
    # Backoffs that would leave a stage asleep long after another stage got through.
    monkeypatch.setattr(stages, "store_backoff_s", lambda attempt: 0.05 * 4**attempt)
    opener = _Opener(failures=2)

    async def main() -> tuple[list[object], list[float]]:
        writer = stages.StoreWriter(opener)
        loop = asyncio.get_running_loop()
        started = loop.time()
        done_at: list[float] = []

        async def stage(delay: float) -> object:
            await asyncio.sleep(delay)
            store = await writer.store()
            done_at.append(loop.time() - started)
            return store

        stores = await asyncio.gather(*(stage(d) for d in (0.0, 0.01, 0.02)))
        await writer.close()
        return list(stores), done_at

    stores, done_at = asyncio.run(main())
    assert len(opener.opened) == 1  # one store for the worker, not one per stage
    assert opener.attempts == 3  # two refusals, then the open every stage uses
    assert all(store is opener.opened[0] for store in stores)
    # Every stage has the store as soon as the open succeeds, none waits out a backoff of its own.
    assert max(done_at) - min(done_at) < 0.1
