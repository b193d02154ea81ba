"""How long decode waits for the engine metrics feed: longer before its first catch-up.

A batch decoded before the feed has read the topic once is stored with no engine state for
good (one CI run stored 466 of 2,708 vLLM calls so when the feed took seconds to start), so
the first wait is long; once caught up, a feed behind holds a batch back only briefly.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from driftline.config import KafkaSettings
from driftline.streams import engine_feed
from driftline.streams.engine_attribution import EngineAttribution
from driftline.streams.engine_feed import EngineMetricsFeed


@pytest.fixture
def running_feed() -> Iterator[EngineMetricsFeed]:
    """A feed whose reader thread is alive but reads nothing (never catches up by itself)."""
    feed = EngineMetricsFeed(
        KafkaSettings(bootstrap_servers="127.0.0.1:1"), "127.0.0.1:1", EngineAttribution()
    )
    release = threading.Event()
    feed._thread = threading.Thread(target=release.wait, daemon=True)
    feed._thread.start()
    yield feed
    release.set()


def waited(feed: EngineMetricsFeed) -> tuple[bool, float]:
    began = time.monotonic()
    caught_up = asyncio.run(feed.catch_up())
    return caught_up, time.monotonic() - began


def test_before_its_first_catch_up_the_feed_is_waited_for_longer(
    running_feed: EngineMetricsFeed, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_feed, "FIRST_CATCH_UP_WAIT_S", 1.5)
    monkeypatch.setattr(engine_feed, "ENGINE_JOIN_WAIT_S", 0.2)
    caught_up, seconds = waited(running_feed)
    assert not caught_up and seconds >= 1.5

    running_feed._caught_up_at = time.monotonic() - 10  # caught up once, behind since
    caught_up, seconds = waited(running_feed)
    assert not caught_up and 0.2 <= seconds < 1.0


def test_a_caught_up_feed_holds_nothing_back(running_feed: EngineMetricsFeed) -> None:
    running_feed._caught_up_at = time.monotonic() + 1
    caught_up, seconds = waited(running_feed)
    assert caught_up and seconds < 0.1


def test_a_feed_that_stopped_holds_nothing_back() -> None:
    feed = EngineMetricsFeed(
        KafkaSettings(bootstrap_servers="127.0.0.1:1"), "127.0.0.1:1", EngineAttribution()
    )
    caught_up, seconds = waited(feed)  # never started: no thread to wait for
    assert not caught_up and seconds < 0.1
