"""No secret ever leaves the notifier: not in logs, stdout, delivery rows or reprs.

Receivers that fail and echo what they were sent (whole, or padded so that any cut at a round
length splits the key, or only the URL's token) stand in for a misbehaving PagerDuty or chat
endpoint; one route points at a port nothing listens on. Every text a run writes is searched
for any 8-character piece of the fake secrets, so a leaked prefix counts as a leak. Delivery
rows go through the real store (chdb) and are read back as text.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.config import StoreSettings
from driftline.schemas.tables import DELIVERIES
from driftline.store import ChdbStore, open_store
from driftline.streams.notifier import Notifier, RetryPolicy, Route, Router
from driftline.streams.notifier.routing import scrub
from driftline.streams.sink import to_arrow
from tests.unit.test_notifier_delivery import FakeClock, opened, resolved
from tests.utils.events import reset_store
from tests.utils.http_receiver import HttpReceiver, ReceivedRequest, Reply

ROUTING_KEY = "R7q2Zk9VwX4mB8nJ3pL6tY1cH5dF0gSa"  # 32 characters, like a real integration key
HOOK_TOKEN = "Xo3vQ8rT1kW6zN2bM9cJ4hL7"  # a chat webhook's secret path segment
CONFIG_HOOK_TOKEN = "Pz5wE2yU8iO1aS4dG7jK0lQm"  # a token written into a route's url in config
SECRETS = (ROUTING_KEY, HOOK_TOKEN, CONFIG_HOOK_TOKEN)
PIECE = 8


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbStore]:
    store = open_store(f"chdb://{tmp_path_factory.mktemp('chdb')}", StoreSettings(ttl_days=3650))
    assert isinstance(store, ChdbStore)
    yield store
    store.close()


def leaks(text: str) -> list[str]:
    """Every 8-character piece of a secret found in ``text``."""
    return [
        secret[i : i + PIECE]
        for secret in SECRETS
        for i in range(len(secret) - PIECE + 1)
        if secret[i : i + PIECE] in text
    ]


def echo_at(position: int) -> Any:
    """A 500 whose text holds the request so that the routing key starts at ``position``
    of the error the notifier writes ("HTTP 500: " + text): a cut there splits the key."""

    def reply(request: ReceivedRequest) -> Reply:
        body = request.body.decode()
        filler = "x" * max(0, position - len("HTTP 500: ") - body.find(ROUTING_KEY))
        return Reply(500, body=filler + body)

    return reply


def echo_path(status: int) -> Any:
    def reply(request: ReceivedRequest) -> Reply:
        token = request.path.rsplit("/", 1)[-1]
        return Reply(status, body=f"no such hook {request.path} (token {token} unknown)")

    return reply


def free_port() -> int:
    with HttpReceiver() as probe:
        return probe.port  # nothing listens there once the receiver stops


@pytest.mark.parametrize("position", [995, 1000, 1995, 2000, 5000])
async def test_no_piece_of_a_secret_in_logs_rows_or_output(
    position: int,
    store: ChdbStore,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, httpx and httpcore included
    # by name too: a library imported earlier in the run (litellm) turns httpx's logger down
    for name in ("httpx", "httpcore"):
        caplog.set_level(logging.DEBUG, logger=name)
    reset_store(store)
    gone = f"http://127.0.0.1:{free_port()}"
    with HttpReceiver() as pager, HttpReceiver() as chat, HttpReceiver() as configured:
        pager.respond_with(echo_at(position))
        chat.respond_with(echo_path(500))
        configured.respond_with(echo_path(404))
        env = {
            "PD_KEY": ROUTING_KEY,
            "CHAT_URL": f"{chat.base_url}/services/T0ABC/B0DEF/{HOOK_TOKEN}",
            "GONE_URL": f"{gone}/hooks/{HOOK_TOKEN}?token={CONFIG_HOOK_TOKEN}",
        }
        routes = (
            Route("pager", min_severity="info", url=pager.url, routing_key_env="PD_KEY"),
            Route("chat", kind="webhook", min_severity="info", routing_key_env="CHAT_URL"),
            Route(
                "configured",
                kind="webhook",
                min_severity="info",
                url=f"{configured.base_url}/hooks/{CONFIG_HOOK_TOKEN}",
            ),
            Route("gone", kind="webhook", min_severity="info", routing_key_env="GONE_URL"),
        )
        clock = FakeClock()
        notifier = Notifier(
            Router(routes, environ=env),
            clock=clock,
            sleep=clock.sleep,
            rng=random.Random(3),
            retry=RetryPolicy(base_s=1, cap_s=5, max_attempts=3),
            keep_for_redelivery=False,
            timeout_s=2.0,
        )
        records = await notifier.deliver([opened(), resolved()])
        await notifier.aclose()
        sent = [r.body.decode() + r.path for rx in (pager, chat, configured) for r in rx.requests]

    assert sum(ROUTING_KEY in text for text in sent) >= 2  # the key really went out
    assert {r["target"].split("@")[0] for r in records} == {"pager", "chat", "configured", "gone"}
    assert {r["outcome"] for r in records} >= {"retrying", "gave_up", "failed_permanent"}
    assert any("***" in r["error"] for r in records)  # echoes were there, and were scrubbed

    store.insert_arrow(DELIVERIES.name, to_arrow(records, DELIVERIES.fields))
    rows = store.query(f"SELECT * FROM {DELIVERIES.name}").to_pylist()
    # rows of different routes with one alert, action, attempt and sent_at share the table's
    # sorting key and collapse (the injected clock stands still): the records are checked too
    assert {r["error"] for r in rows} <= {r["error"] for r in records} and rows
    print(summary_line := f"delivered {len(records)} records")  # what a command would print
    out = capsys.readouterr()
    written = {
        "log": caplog.text,
        "log messages": "\n".join(r.getMessage() for r in caplog.records),
        "records": json.dumps(records),
        "rows": json.dumps(rows, default=str),
        "stdout": out.out + out.err,
        "reprs": repr(notifier) + repr(notifier.router) + json.dumps(notifier.export_state()),
    }
    assert summary_line in written["stdout"]
    assert any("HTTP Request" in r.getMessage() for r in caplog.records)  # httpx did log
    assert {name: leaks(text) for name, text in written.items()} == {name: [] for name in written}


def test_a_secret_cut_before_scrubbing_loses_its_prefix_too() -> None:
    cut = f"HTTP 500: {'x' * 20}{ROUTING_KEY[:11]}"  # someone cut the text mid-key
    assert leaks(scrub(cut, [ROUTING_KEY])) == []
    assert scrub("ok R7q2", [ROUTING_KEY]) == "ok R7q2"  # a few characters are no secret


@settings(max_examples=300, deadline=None)
@given(
    before=st.text(max_size=300),
    after=st.text(max_size=300),
    copies=st.integers(1, 3),
    limit=st.integers(1, 1200),
)
def test_scrubbing_then_cutting_never_leaves_a_piece_of_a_secret(
    before: str, after: str, copies: int, limit: int
) -> None:
    response = before + (ROUTING_KEY + after) * copies
    assert leaks(scrub(response, SECRETS)[:limit]) == []


@settings(max_examples=300, deadline=None)
@given(before=st.text(max_size=100), cut=st.integers(PIECE, len(ROUTING_KEY)))
def test_a_secret_cut_by_someone_else_is_masked_at_the_end(before: str, cut: int) -> None:
    assert leaks(scrub(before + ROUTING_KEY[:cut], SECRETS)) == []
