"""Alert delivery: PagerDuty Events API v2 and generic webhooks (no Faust import here).

The stream agent calls :meth:`Notifier.deliver` with alert transition records and
writes the returned delivery records to ``alert_deliveries``;
``driftline replay --notify`` calls :func:`notify_sync`.
"""

from driftline.streams.notifier.delivery import Notifier, event_action
from driftline.streams.notifier.ledger import DeliveryLedger
from driftline.streams.notifier.payload import resolve_event, summary, trigger_event
from driftline.streams.notifier.ratelimit import TokenBucket
from driftline.streams.notifier.records import DELIVERY_FIELDS, FINAL_OUTCOMES
from driftline.streams.notifier.replay import notify_sync
from driftline.streams.notifier.retry import RetryPolicy
from driftline.streams.notifier.routing import MissingSecretError, Route, Router, Secret
from driftline.streams.notifier.transport import (
    HttpxTransport,
    Transport,
    TransportError,
    TransportResponse,
)
from driftline.streams.notifier.webhook import alertmanager_body, slack_body

__all__ = [
    "DELIVERY_FIELDS",
    "FINAL_OUTCOMES",
    "DeliveryLedger",
    "HttpxTransport",
    "MissingSecretError",
    "Notifier",
    "RetryPolicy",
    "Route",
    "Router",
    "Secret",
    "TokenBucket",
    "Transport",
    "TransportError",
    "TransportResponse",
    "alertmanager_body",
    "event_action",
    "notify_sync",
    "resolve_event",
    "slack_body",
    "summary",
    "trigger_event",
]
