"""The notifier: routes alert transitions, paces, retries and records every attempt.

One PagerDuty trigger per incident: an ``update`` of an alert whose trigger was delivered
on a PagerDuty route is recorded as ``coalesced`` and not sent (a trigger would page
again); it is sent as the trigger only if the open's delivery failed. Webhook routes
receive material updates.

``await notifier.deliver(transitions)`` returns once every transition reached a
final outcome on every route it goes to, or was kept for redelivery on a route that keeps
failing, so the stream worker can commit Kafka offsets after it. Per route, events leave in
arrival order (a resolve is never sent before its trigger); an ``update`` still waiting behind
the rate limit or an outage is replaced by a newer update of the same alert (latest state
wins), while opens and resolves are never dropped. Time comes from the injected
``clock``/``sleep``, so tests simulate a five-minute outage without waiting.

Routes are independent. Each has its own queue and sender; a route whose event still fails
after the retry policy's in-line budget (``RetryPolicy.max_elapsed_s``, ``max_attempts``) is
*held*: the event, and every later one for that route, is kept for redelivery and retried in
the background with capped backoff for as long as it takes (a PagerDuty outage can last
hours), while ``deliver`` returns so the next alerts reach the other routes at once. A held
event is a dead letter in the delivery ledger (:func:`ledger.held_key`), made durable through
``on_delivered`` before ``deliver`` returns, so the offset committed after it loses nothing:
a worker that restarts and loads the ledger (:meth:`Notifier.import_state`) resumes it. Only
an answer that cannot change (a 4xx other than 408/429, a missing secret) ends a delivery
unsent. What happens to held events later comes back from the next ``deliver`` call (or
:meth:`Notifier.take_late_records`). ``keep_for_redelivery=False`` (``driftline replay
--notify``, which exits when done) gives up after the budget instead.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from driftline.config import PagerDutySettings
from driftline.streams.notifier import payload, records, webhook
from driftline.streams.notifier.ledger import (
    SOURCE_OFFSET,
    DeliveryLedger,
    already_paged,
    held_key,
    skip_reason,
)
from driftline.streams.notifier.metrics import DeliveryMetrics
from driftline.streams.notifier.ratelimit import TokenBucket
from driftline.streams.notifier.records import delivery_record
from driftline.streams.notifier.retry import RetryPolicy
from driftline.streams.notifier.routing import (
    Destination,
    MissingSecretError,
    Route,
    Router,
    scrub,
)
from driftline.streams.notifier.transport import HttpxTransport, Transport, TransportError

logger = logging.getLogger("driftline.notifier")

DEFAULT_BURST: Final = 10
DEFAULT_TIMEOUT_S: Final = 10.0
DEFAULT_MATERIAL_CHANGE: Final = 0.05  # an update moving the value less than 5% is not re-sent
TRANSITION_ACTIONS: Final = {"open": "trigger", "update": "trigger", "resolve": "resolve"}
# Loggers of the HTTP stack print request URLs; a webhook URL carries its secret.
HTTP_LOGGERS: Final = ("httpx", "httpcore")


class _RedactSecrets(logging.Filter):
    """Replaces registered secrets in records of the HTTP client's loggers."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            cleaned = scrub(message, sorted(self.secrets, key=len, reverse=True))
            if cleaned != message:
                record.msg, record.args = cleaned, ()
        return True


_REDACT = _RedactSecrets()
for _name in HTTP_LOGGERS:
    logging.getLogger(_name).addFilter(_REDACT)


def event_action(transition: Mapping[str, Any]) -> str:
    """``trigger`` for open and update, ``resolve`` for resolve (state decides if absent)."""
    name = transition.get("transition")
    if name is None:
        name = "resolve" if transition.get("state") == "resolved" else "open"
    try:
        return TRANSITION_ACTIONS[str(name)]
    except KeyError:
        raise ValueError(
            f"alert {transition.get('alert_id')}: transition must be open, update or resolve, "
            f"got {name!r}"
        ) from None


def _event_us(transition: Mapping[str, Any]) -> int:
    """The transition's event time in microseconds; 0 when it has none."""
    value = transition.get("event_ts")
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _is_retryable(status_code: int) -> bool:
    return status_code in (408, 429) or status_code >= 500


@dataclass(eq=False, slots=True)
class _Pending:
    transition: dict[str, Any]
    route: Route
    event_action: str
    future: asyncio.Future[list[dict[str, Any]]]
    in_flight: bool = False
    held_key: str | None = None  # its dead-letter entry in the ledger, while kept


class Notifier:
    """Delivers alert transitions to PagerDuty Events API v2 and generic webhooks.

    Parameters
    ----------
    router
        Which routes an alert goes to; holds no secret values itself.
    transport
        Sender of one JSON body; default :class:`HttpxTransport`.
    clock
        Seconds since the Unix epoch (``time.time``); stamps ``sent_at`` and paces sends.
    sleep
        Awaitable sleep in seconds (``asyncio.sleep``); tests advance a fake clock.
    rng
        Source of backoff jitter; pass a seeded :class:`random.Random` for reproducible runs.
    retry
        Backoff bounds. Past ``max_elapsed_s`` or ``max_attempts`` the route is held and the
        event kept for redelivery (retried every ``cap_s`` at most), or with
        ``keep_for_redelivery=False`` the outcome is ``gave_up``.
    max_events_per_minute, burst
        Token bucket per routing key (PagerDuty allows about 120 events/min per key), per URL
        for webhooks.
    timeout_s
        Per-attempt HTTP timeout; a hanging endpoint counts as a retryable failure.
    material_change
        Relative change of ``current_value`` or ``score`` below which an ``update`` with
        unchanged severity is not re-sent.
    keep_for_redelivery
        Hold a failing route and keep retrying in the background (the stream worker), or
        give up after the retry budget (a command that exits when done).
    """

    def __init__(
        self,
        router: Router,
        *,
        transport: Transport | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        retry: RetryPolicy | None = None,
        max_events_per_minute: int = 120,
        burst: int = DEFAULT_BURST,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        material_change: float = DEFAULT_MATERIAL_CHANGE,
        keep_for_redelivery: bool = True,
    ) -> None:
        if max_events_per_minute < 1:
            raise ValueError(f"max_events_per_minute must be >= 1, got {max_events_per_minute}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if material_change < 0:
            raise ValueError(f"material_change must be >= 0, got {material_change}")
        self.router = router
        self.transport: Transport = transport if transport is not None else HttpxTransport()
        self.clock = clock
        self.sleep = sleep
        self.rng = rng if rng is not None else random.Random()
        self.retry = retry if retry is not None else RetryPolicy()
        self.max_events_per_minute = max_events_per_minute
        self.burst = burst
        self.timeout_s = timeout_s
        self.material_change = material_change
        self.keep_for_redelivery = keep_for_redelivery
        self.ledger = DeliveryLedger()
        self.metrics = DeliveryMetrics()  # read by the worker's /metrics
        # Awaited with each ledger entry right after a delivery succeeded, so the caller can
        # make it durable before the next send instead of after a whole batch (a crash in
        # between would page again); also with each event kept for redelivery and released.
        self.on_delivered: Callable[[dict[str, Any]], Awaitable[None]] | None = None
        self._unsaved: dict[str, dict[str, Any]] = {}  # held/released entries to make durable
        self._kept: set[str] = set()  # held keys of events queued now
        self._resume_due = False  # state was loaded: queue the held events it names
        self._queues: dict[str, deque[_Pending]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self._held: set[str] = set()  # routes whose head event failed past the retry budget
        # records of events whose deliver() call had returned already (held, then settled)
        self._late: list[dict[str, Any]] = []

    @classmethod
    def from_settings(
        cls,
        settings: PagerDutySettings,
        *,
        environ: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> Notifier:
        router = Router.from_settings(settings, environ)
        kwargs.setdefault("max_events_per_minute", settings.max_events_per_minute)
        return cls(router, **kwargs)

    def __repr__(self) -> str:
        names = ", ".join(route.name for route in self.router.routes)
        return f"Notifier(routes=[{names}], pending={self.pending()})"

    # -- state across restarts ---------------------------------------------------------

    def export_state(self) -> dict[str, dict[str, Any]]:
        """Last delivered event per (route, dedup key); feed to :meth:`import_state`."""
        return self.ledger.export()

    def import_state(self, state: Mapping[str, Mapping[str, Any]]) -> None:
        """Load delivery state; events it holds for redelivery are queued again on their route
        (now, if an event loop runs, else at the next :meth:`deliver`)."""
        self.ledger.load(state)
        self._resume_due = True
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        self._resume_held()

    def _resume_held(self) -> None:
        if not self._resume_due:
            return
        self._resume_due = False
        loop = asyncio.get_running_loop()
        routes = {route.route_id: route for route in self.router.routes}
        resumed: dict[str, list[_Pending]] = {}
        for key, entry in self.ledger.held():
            if key in self._kept:
                continue
            route = routes.get(str(entry.get("route_id")))
            if route is None:
                logger.error(
                    "alert %s was kept for a route no longer configured; dropped",
                    entry.get("dedup_key"),
                )
                released = self.ledger.release(key, entry.get("dedup_key"), self._now_us())
                self._unsaved.update(released)
                continue
            item = _Pending(
                dict(entry["held"]), route, str(entry["event_action"]), loop.create_future(), False
            )
            item.held_key = key
            item.future.set_result([])  # nobody waits for it: its records come back late
            self._kept.add(key)
            resumed.setdefault(route.route_id, []).append(item)
        for route_id, items in resumed.items():
            queue = self._queues.setdefault(route_id, deque())
            start = 1 if queue and queue[0].in_flight else 0
            for offset, item in enumerate(items):
                queue.insert(start + offset, item)
            self._held.add(route_id)  # it was failing: new events queue behind the resumed
            logger.warning(
                "route %s: resumed %d events kept for redelivery", items[0].route.name, len(items)
            )
            if route_id not in self._workers:
                self._workers[route_id] = loop.create_task(self._drain(route_id))

    def pending(self) -> int:
        return sum(len(queue) for queue in self._queues.values())

    def held_routes(self) -> list[str]:
        """Names of the routes whose events are kept for redelivery right now."""
        return [route.name for route in self.router.routes if route.route_id in self._held]

    def take_late_records(self) -> list[dict[str, Any]]:
        """Delivery records of held events made since the last call (write them as usual)."""
        late, self._late = self._late, []
        self.metrics.count(late)
        return late

    # -- delivery -------------------------------------------------------------------------

    async def deliver(self, transitions: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Send ``transitions``; return their delivery records once each is final or held.

        The records of held events that progressed since the last call follow.
        """
        self._resume_held()
        slots = [self._submit(dict(transition)) for transition in transitions]
        out: list[dict[str, Any]] = []
        for slot in slots:
            for item in slot:
                out.extend(item if isinstance(item, list) else await item)
        await self._save()  # held events are durable before the caller commits their offsets
        self.metrics.count(out)
        out.extend(self.take_late_records())
        return out

    def deliver_sync(self, transitions: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """:meth:`deliver` for synchronous callers such as ``driftline replay --notify``."""

        async def run() -> list[dict[str, Any]]:
            try:
                return await self.deliver(transitions)
            finally:
                await self.transport.aclose()

        return asyncio.run(run())

    async def aclose(self) -> None:
        if self._held:
            logger.warning(
                "notifier closing with %d events undelivered on held routes %s; they are sent "
                "again when their alerts are read again",
                self.pending(),
                ", ".join(self.held_routes()),
            )
        for task in list(self._workers.values()):
            task.cancel()
        await asyncio.gather(*self._workers.values(), return_exceptions=True)
        await self.transport.aclose()

    def _now_us(self) -> int:
        return int(self.clock() * 1_000_000)

    def _routes_for(self, transition: Mapping[str, Any], action: str) -> list[Route]:
        routes = self.router.match(transition)
        if action == "resolve":
            # A resolve goes wherever the trigger went, even if the severity dropped since.
            dedup_key = str(transition.get("dedup_key", ""))
            for route in self.router.routes:
                if route in routes:
                    continue
                last = self.ledger.get(route.route_id, dedup_key)
                queued = any(
                    p.transition.get("dedup_key") == dedup_key
                    for p in self._queues.get(route.route_id, ())
                )
                if queued or (last is not None and last.get("event_action") == "trigger"):
                    routes.append(route)
        return routes

    def _submit(
        self, transition: dict[str, Any]
    ) -> list[list[dict[str, Any]] | asyncio.Future[list[dict[str, Any]]]]:
        try:
            action = event_action(transition)
        except ValueError as exc:
            logger.error("alert transition rejected: %s", exc)
            rejected = records.FAILED_PERMANENT
            return [[self._record(transition, "trigger", 0, rejected, "", str(exc))]]
        routes = self._routes_for(transition, action)
        if not routes:
            reason = (
                f"no route matches workflow {transition.get('workflow')!r} "
                f"severity {transition.get('severity')!r}"
            )
            logger.warning("alert %s unrouted: %s", transition.get("dedup_key"), reason)
            return [[self._record(transition, action, 0, records.UNROUTED, "", reason)]]
        return [self._enqueue(transition, route, action) for route in routes]

    def _enqueue(
        self, transition: dict[str, Any], route: Route, action: str
    ) -> asyncio.Future[list[dict[str, Any]]]:
        loop = asyncio.get_running_loop()
        queue = self._queues.setdefault(route.route_id, deque())
        item = _Pending(transition, route, action, loop.create_future())
        if transition.get("transition") == "update":
            for index in range(len(queue) - 1, -1, -1):
                waiting = queue[index]
                if waiting.transition.get("dedup_key") != transition.get("dedup_key"):
                    continue
                # Only the newest queued event of this alert may be replaced, and only by
                # an update of the same alert: order with opens and resolves is kept.
                if (
                    not waiting.in_flight
                    and waiting.transition.get("transition") == "update"
                    and waiting.transition.get("alert_id") == transition.get("alert_id")
                ):
                    queue[index] = item
                    self._release(waiting)
                    self._settle(
                        waiting,
                        [
                            self._record(
                                waiting.transition,
                                waiting.event_action,
                                0,
                                records.COALESCED,
                                self._target_name(route),
                                "superseded by a newer update of the same alert while queued",
                            )
                        ],
                    )
                    self._answer_if_held(item)
                    return item.future
                break
        queue.append(item)
        self._answer_if_held(item)
        if route.route_id not in self._workers:
            self._workers[route.route_id] = loop.create_task(self._drain(route.route_id))
        return item.future

    async def _drain(self, route_id: str) -> None:
        queue = self._queues[route_id]
        try:
            while queue:
                item = queue[0]
                item.in_flight = True
                try:
                    result = await self._send(item)
                except Exception as exc:  # a bug must not wedge every later alert on the route
                    logger.error(
                        "internal error delivering %s: %s",
                        item.transition.get("dedup_key"),
                        type(exc).__name__,
                    )
                    result = [
                        self._record(
                            item.transition,
                            item.event_action,
                            0,
                            records.FAILED_PERMANENT,
                            self._target_name(item.route),
                            f"internal error: {type(exc).__name__}",
                        )
                    ]
                queue.popleft()
                self._release(item)
                self._settle(item, result)
                try:
                    await self._save()
                except Exception as exc:  # kept unsaved: the next save writes it again
                    logger.error("delivery state not checkpointed: %s", type(exc).__name__)
        finally:
            self._workers.pop(route_id, None)
            if queue and asyncio.current_task() is not None:
                for item in queue:
                    if not item.future.done():
                        item.future.cancel()
                queue.clear()

    def _settle(self, item: _Pending, result: list[dict[str, Any]]) -> None:
        """Hand ``result`` to the caller waiting for ``item``, or keep it for the next call."""
        if item.future.done():
            self._late.extend(result)
        else:
            item.future.set_result(result)

    def _answer_if_held(self, item: _Pending) -> None:
        """An event queued on a held route: its caller learns it is kept, and goes on."""
        if item.route.route_id in self._held and not item.future.done():
            self._keep(item)
            note = f"queued behind a held event; kept for redelivery on route {item.route.name}"
            target = self._target_name(item.route)
            item.future.set_result(
                [
                    self._record(
                        item.transition, item.event_action, 0, records.RETRYING, target, note
                    )
                ]
            )

    def _keep(self, item: _Pending) -> None:
        """Write ``item`` into the ledger as a dead letter, to be made durable by :meth:`_save`."""
        if item.held_key is not None:
            return
        route_id = item.route.route_id
        item.held_key = held_key(route_id, item.transition, item.event_action)
        self._kept.add(item.held_key)
        self._unsaved.update(
            self.ledger.hold(
                item.held_key, route_id, item.transition, item.event_action, self._now_us()
            )
        )

    def _release(self, item: _Pending) -> None:
        """``item`` is settled (sent, refused or superseded): no restart may resume it."""
        if item.held_key is None:
            return
        dedup_key = item.transition.get("dedup_key")
        self._unsaved.update(self.ledger.release(item.held_key, dedup_key, self._now_us()))
        self._kept.discard(item.held_key)
        item.held_key = None

    async def _save(self) -> None:
        """Hand the held and released entries to ``on_delivered`` (the durable checkpoint)."""
        while self._unsaved and self.on_delivered is not None:
            key = next(iter(self._unsaved))
            entry = self._unsaved[key]
            await self.on_delivered({key: entry})
            if self._unsaved.get(key) is entry:  # not replaced while the write was in flight
                del self._unsaved[key]
        if self.on_delivered is None:
            self._unsaved.clear()

    def _hold(self, item: _Pending, log: list[dict[str, Any]]) -> None:
        """Hold ``item``'s route: answer every caller waiting on it, keep retrying its events."""
        route_id = item.route.route_id
        if route_id in self._held:
            return
        self._held.add(route_id)
        self._keep(item)
        logger.error(
            "route %s held: alert %s %s still failing; kept for redelivery, other routes go on",
            item.route.name,
            item.transition.get("dedup_key"),
            item.event_action,
        )
        self._settle(item, list(log))
        log.clear()  # what follows for this event is late
        for waiting in self._queues.get(route_id, ()):
            self._answer_if_held(waiting)

    def _target_name(self, route: Route) -> str:
        try:
            return self.router.destination(route).target
        except MissingSecretError:
            return f"{route.name}@?"

    def _record(
        self,
        transition: Mapping[str, Any],
        action: str,
        attempt: int,
        outcome: records.Outcome,
        target: str,
        error: str = "",
        status_code: int = 0,
        latency_ms: float = 0.0,
        sent_at: int | None = None,
    ) -> dict[str, Any]:
        return delivery_record(
            dict(transition),
            event_action=action,
            attempt=attempt,
            outcome=outcome,
            sent_at=self._now_us() if sent_at is None else sent_at,
            target=target,
            status_code=status_code,
            error=error,
            latency_ms=latency_ms,
        )

    def _attempt_record(
        self,
        transition: Mapping[str, Any],
        action: str,
        attempt: int,
        outcome: records.Outcome,
        *,
        route: str,
        target: str,
        status_code: int,
        took_s: float,
        sent_at: int,
        error: str = "",
    ) -> dict[str, Any]:
        """The record of one HTTP attempt, its time observed by route and outcome."""
        self.metrics.observe_send(route, outcome, took_s)
        return self._record(
            transition,
            action,
            attempt,
            outcome,
            target,
            error,
            status_code=status_code,
            latency_ms=took_s * 1000.0,
            sent_at=sent_at,
        )

    def _body(self, destination: Destination, transition: Mapping[str, Any], action: str) -> bytes:
        route = destination.route
        if route.kind == "webhook":
            if route.webhook_format == "alertmanager":
                doc = webhook.alertmanager_body(transition, receiver=route.name)
            else:
                doc = webhook.slack_body(transition)
            return payload.encode_body(doc, None)
        if action == "trigger":
            event = payload.trigger_event(transition)
        else:
            event = payload.resolve_event(transition)
        key = destination.routing_key.reveal() if destination.routing_key else None
        return payload.encode_body(event, key)

    def _bucket(self, destination: Destination) -> TokenBucket:
        # PagerDuty limits events per routing key: routes sharing a key share one bucket.
        # Keyed by a digest, so the key itself is never held as a dictionary key.
        if destination.routing_key is not None:
            secret = destination.routing_key.reveal().encode()
            name = "key:" + hashlib.blake2b(secret, digest_size=12).hexdigest()
        else:
            name = "url:" + hashlib.blake2b(destination.url.encode(), digest_size=12).hexdigest()
        if name not in self._buckets:
            self._buckets[name] = TokenBucket(
                self.max_events_per_minute / 60.0, self.burst, self.clock()
            )
        return self._buckets[name]

    async def _send(self, item: _Pending) -> list[dict[str, Any]]:
        transition, route, action = item.transition, item.route, item.event_action
        dedup_key = str(transition.get("dedup_key", ""))
        try:
            destination = self.router.destination(route)
        except MissingSecretError as exc:
            logger.error("alert %s not sent: %s", dedup_key, exc)
            target = f"{route.name}@?"
            return [self._record(transition, action, 0, records.FAILED_PERMANENT, target, str(exc))]
        target = destination.target
        secrets = self.router.known_secrets()
        _REDACT.secrets.update(secrets)

        last = self.ledger.get(route.route_id, dedup_key)
        reason = skip_reason(last, transition, action, self.material_change)
        if reason is None and route.kind == "pagerduty":
            reason = already_paged(last, transition)
        if reason:
            logger.info("alert %s %s to %s skipped: %s", dedup_key, action, target, reason)
            return [self._record(transition, action, 0, records.COALESCED, target, reason)]
        try:
            body = self._body(destination, transition, action)
        except (KeyError, TypeError, ValueError) as exc:
            reason = scrub(f"cannot build the event: {type(exc).__name__}: {exc}", secrets)
            logger.error("alert %s to %s: %s", dedup_key, target, reason)
            return [self._record(transition, action, 0, records.FAILED_PERMANENT, target, reason)]

        bucket = self._bucket(destination)
        started = self.clock()
        log: list[dict[str, Any]] = []
        attempt = 0
        while True:
            attempt += 1
            while (wait := bucket.wait_time(self.clock())) > 0:
                await self.sleep(wait)
            bucket.take(self.clock())
            sent_at = self._now_us()
            began = time.perf_counter()
            status, error, retry_after = 0, "", None
            try:
                response = await self.transport.post(destination.url, body, self.timeout_s)
                status, retry_after = response.status_code, response.retry_after_s
                if not 200 <= status < 300:
                    # scrubbed whole, then cut: a cut can split a secret scrub would miss
                    error = scrub(f"HTTP {status}: {response.text.strip()}", secrets)
                    error = error[: records.MAX_ERROR_CHARS]
            except TransportError as exc:
                error = scrub(str(exc), secrets)[: records.MAX_ERROR_CHARS]
            took_s = time.perf_counter() - began

            # Every branch below records the attempt once, and so times it once.
            record = functools.partial(
                self._attempt_record,
                transition,
                action,
                attempt,
                route=route.name,
                target=target,
                status_code=status,
                took_s=took_s,
                sent_at=sent_at,
            )

            if 200 <= status < 300:
                self._held.discard(route.route_id)
                entry = self.ledger.record(route.route_id, transition, action, sent_at)
                log.append(record(records.DELIVERED, error=error))
                self.metrics.observe_accepted(route.name, _event_us(transition), self.clock())
                if self.on_delivered is not None:
                    await self.on_delivered(entry)
                logger.info(
                    "alert %s %s (%s of %s, llm_alerts offset %s) delivered to %s (attempt %d)",
                    dedup_key,
                    action,
                    transition.get("transition"),
                    str(transition.get("alert_id", ""))[:12],
                    transition.get(SOURCE_OFFSET, "-"),
                    target,
                    attempt,
                )
                return log
            if status and not _is_retryable(status):
                log.append(record(records.FAILED_PERMANENT, error=error))
                logger.error("alert %s %s rejected by %s: %s", dedup_key, action, target, error)
                return log
            delay = self.retry.delay(attempt, self.rng)
            if retry_after is not None:
                delay = max(delay, min(retry_after, self.retry.cap_s))
            elapsed = self.clock() - started
            over_budget = (
                attempt >= self.retry.max_attempts or elapsed + delay > self.retry.max_elapsed_s
            )
            if over_budget and not self.keep_for_redelivery:
                note = f"{error}; gave up after {attempt} attempts over {elapsed:.0f} s"
                log.append(record(records.GAVE_UP, error=note))
                logger.error("alert %s %s to %s: %s", dedup_key, action, target, note)
                return log
            note = f"{error}; retrying in {delay:.1f} s"
            if over_budget:
                note += f"; kept for redelivery on route {route.name}"
            log.append(record(records.RETRYING, error=note))
            if over_budget:
                self._hold(item, log)
            logger.warning(
                "alert %s %s to %s failed (%s), retry %d in %.1f s",
                dedup_key,
                action,
                target,
                error,
                attempt,
                delay,
            )
            if status == 429:
                bucket.empty(self.clock())
            await self.sleep(delay)
