"""Which destinations an alert goes to, and the secrets needed to reach them.

Every route whose workflow glob and minimum severity match receives the alert
(fan-out), so a config can page PagerDuty for critical alerts and post everything
to a chat webhook. With no routes configured, one ``default`` route sends every
alert to PagerDuty with the key from ``$PAGERDUTY_ROUTING_KEY`` and the endpoint
from ``$PAGERDUTY_EVENTS_URL`` (default: the public Events API v2 URL), so
``driftline replay --notify`` works with zero configuration.

Secrets (routing keys, webhook URLs read from the environment) are wrapped in
:class:`Secret`, whose ``repr`` and ``str`` never show the value.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import quote, urlsplit

from driftline.config import DEFAULT_PAGERDUTY_EVENTS_URL, PagerDutySettings

ENV_ROUTING_KEY: Final = "PAGERDUTY_ROUTING_KEY"
ENV_EVENTS_URL: Final = "PAGERDUTY_EVENTS_URL"
DEFAULT_ROUTE_NAME: Final = "default"

Severity = Literal["critical", "error", "warning", "info"]
SEVERITY_RANK: Final[dict[str, int]] = {"info": 0, "warning": 1, "error": 2, "critical": 3}


class MissingSecretError(LookupError):
    """A route needs a secret from an environment variable that is not set."""


class Secret:
    """A string that does not print itself: routing keys and secret webhook URLs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not value:
            raise ValueError("a secret must not be empty")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


MIN_PARTIAL_SECRET_CHARS: Final = 6  # a cut-off secret prefix at least this long is masked
MIN_SECRET_PIECE_CHARS: Final = 8  # path segments and query values of secret URLs


def secret_forms(secret: str) -> list[str]:
    """``secret`` as an endpoint may echo it: verbatim, percent-encoded, JSON-escaped.

    >>> secret_forms("a/b c")[:2]
    ['a/b c', 'a%2Fb%20c']
    """
    forms = [secret, quote(secret, safe=""), secret.replace("/", "\\/")]
    return list(dict.fromkeys(form for form in forms if form))


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret replaced by ``***`` (error texts may echo a request).

    Scrub before cutting a text to length: a secret cut in two is no longer found whole. A
    text that ends in the first characters of a secret (cut by someone else) loses them too.

    >>> scrub("bad key R0ut1ngKey, try R0ut1n", ["R0ut1ngKey"])
    'bad key ***, try ***'
    """
    forms = sorted({form for s in secrets if s for form in secret_forms(s)}, key=len, reverse=True)
    for form in forms:
        text = text.replace(form, "***")
    for form in forms:
        for cut in range(len(form) - 1, MIN_PARTIAL_SECRET_CHARS - 1, -1):
            if text.endswith(form[:cut]):
                text = text[: len(text) - cut] + "***"
                break
    return text


@dataclass(frozen=True, slots=True)
class Route:
    """One destination. ``url`` None: PagerDuty's configured URL, or for a webhook the
    URL held (as a secret) in the environment variable ``routing_key_env``."""

    name: str
    kind: Literal["pagerduty", "webhook"] = "pagerduty"
    workflow: str = "*"
    min_severity: Severity = "warning"
    routing_key_env: str = ENV_ROUTING_KEY
    url: str | None = field(default=None, repr=False)  # a chat webhook's URL holds its token
    webhook_format: Literal["slack", "alertmanager"] = "slack"

    def matches(self, alert: Mapping[str, Any]) -> bool:
        severity_rank = SEVERITY_RANK.get(str(alert.get("severity", "")), SEVERITY_RANK["error"])
        return (
            fnmatch.fnmatchcase(str(alert.get("workflow", "")), self.workflow)
            and severity_rank >= SEVERITY_RANK[self.min_severity]
        )

    @property
    def route_id(self) -> str:
        """Stable across restarts and config reordering: delivery state is keyed by it."""
        identity = f"{self.kind}\x1f{self.url or ''}\x1f{self.routing_key_env}"
        return hashlib.blake2b(identity.encode(), digest_size=6).hexdigest()


@dataclass(frozen=True, slots=True)
class Destination:
    """A matched route with its secrets resolved, ready to send to."""

    route: Route
    url: str
    routing_key: Secret | None  # PagerDuty only
    url_is_secret: bool = False

    @property
    def target(self) -> str:
        return f"{self.route.name}@{urlsplit(self.url).hostname or '?'}"

    def secrets(self) -> list[str]:
        """What must never be shown: the routing key; a secret URL, its path, its query and
        their longer pieces (an endpoint may echo only the token at the end of the path)."""
        found = [self.routing_key.reveal()] if self.routing_key else []
        if self.url_is_secret:
            found.append(self.url)
            parts = urlsplit(self.url)
            found.extend(p for p in (parts.path, parts.query) if len(p) > 1)
            pieces = [*parts.path.split("/"), *re.split(r"[&=]", parts.query)]
            found.extend(p for p in pieces if len(p) >= MIN_SECRET_PIECE_CHARS)
        return found


@dataclass(frozen=True)
class Router:
    """Matches alerts to routes and resolves route secrets from the environment."""

    routes: tuple[Route, ...]
    events_url: str = DEFAULT_PAGERDUTY_EVENTS_URL
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ, repr=False)

    @classmethod
    def from_settings(
        cls, settings: PagerDutySettings, environ: Mapping[str, str] | None = None
    ) -> Router:
        env = os.environ if environ is None else environ
        if not settings.routes:
            url = env.get(ENV_EVENTS_URL) or settings.events_url
            default = Route(name=DEFAULT_ROUTE_NAME, min_severity="info", url=url)
            return cls(routes=(default,), events_url=url, environ=env)
        routes = tuple(
            Route(
                name=f"{r.kind}[{i}]",
                kind=r.kind,
                workflow=r.workflow,
                min_severity=r.min_severity,
                routing_key_env=r.routing_key_env,
                url=r.url,
                webhook_format=r.webhook_format,
            )
            for i, r in enumerate(settings.routes)
        )
        return cls(routes=routes, events_url=settings.events_url, environ=env)

    def match(self, alert: Mapping[str, Any]) -> list[Route]:
        return [route for route in self.routes if route.matches(alert)]

    def known_secrets(self) -> list[str]:
        """Every secret any route may use: scrubbed from all error texts, whichever route
        produced them (an endpoint may echo a request, or a misconfigured one another key)."""
        found: set[str] = set()
        for route in self.routes:
            try:
                found.update(self.destination(route).secrets())
            except MissingSecretError:
                continue
        return sorted(found, key=len, reverse=True)

    def destination(self, route: Route) -> Destination:
        """Resolve secrets now (not at start) so a key set after start is picked up."""
        value = self.environ.get(route.routing_key_env, "")
        if route.kind == "pagerduty":
            if not value:
                raise MissingSecretError(
                    f"route {route.name}: environment variable {route.routing_key_env} is not "
                    "set; export the PagerDuty integration (routing) key in it"
                )
            return Destination(route, route.url or self.events_url, Secret(value))
        if route.url:
            # a chat webhook carries its token in the path, wherever its URL was written
            return Destination(route, route.url, None, url_is_secret=True)
        if not value:
            raise MissingSecretError(
                f"route {route.name}: webhook route has no url and environment variable "
                f"{route.routing_key_env} is not set; set one of them"
            )
        return Destination(route, value, None, url_is_secret=True)
