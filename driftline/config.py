"""One settings object: ``driftline.toml`` plus environment, validated at start.

Precedence (highest first): environment variables ``DRIFTLINE_<SECTION>__<KEY>``,
then the TOML file, then defaults. Secrets (PagerDuty routing keys, the ClickHouse
password, Kafka SASL password) are read only from environment variables whose
*names* the file may give; a secret value written into the file is rejected.

A bad value fails at start with the field's dotted path and where the value came from,
for example ``workflows.support-chat.budgets.max_tokens_per_request: Input should be
greater than 0 (set in driftline.toml)``. An environment variable ``DRIFTLINE_<X>__...``
whose section ``<X>`` does not exist is an error, not silently ignored.

``[workflows."*"]`` holds defaults every workflow inherits: a named workflow's table is
merged over it key by key (nested tables too; lists are replaced whole). Workflow names
are exact; any other key with a glob character is refused, because it would match nothing.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

DEFAULT_CONFIG_FILE = "driftline.toml"
ENV_CONFIG_FILE = "DRIFTLINE_CONFIG"
ENV_PREFIX = "DRIFTLINE_"
DEFAULT_PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"


WORKFLOW_DEFAULTS: Final = "*"
_GLOB_CHARACTERS: Final = frozenset("*?[]")
# A variable name as shells and compose files write them. A secret pasted in its place is
# refused: it is not UPPER_SNAKE, or it is one long run of letters and digits (a PagerDuty
# routing key is 32 of them, uppercase in newer accounts), or it is the value of a variable.
_ENV_NAME: Final = re.compile(r"[A-Z_][A-Z0-9_]{0,63}")
_KEY_LIKE: Final = re.compile(r"(?=.*[0-9])[A-Z0-9]{20,}")
# Words of a URL's user name or query parameter name that say it holds a secret.
_SECRET_WORDS: Final = frozenset(
    {"pass", "passwd", "password", "pwd", "pw", "token", "secret", "key", "apikey", "auth"}
    | {"sig", "signature", "credential", "credentials", "accesstoken", "jwt", "session"}
)
_WORD: Final = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]+")
# Highest price accepted, USD per million tokens (list prices are below 1,000): a price near
# the float limit makes every cost infinite, and a page carrying Infinity is refused.
MAX_PRICE_PER_MTOK: Final = 1_000_000.0


class ConfigError(ValueError):
    """The configuration is invalid; the message names every bad field, one line each.

    ``lines`` holds the message's lines as given (a line may quote a name from the file or
    the environment, control characters included), for a command to print one by one.
    """

    def __init__(self, *lines: str) -> None:
        super().__init__("\n".join(lines))
        self.lines: tuple[str, ...] = lines


def _exact_workflow_name(name: str) -> str:
    if name != WORKFLOW_DEFAULTS and _GLOB_CHARACTERS & set(name):
        raise ValueError(
            "workflow names are matched exactly, so a glob matches nothing; name each "
            'workflow, or put shared settings in [workflows."*"]'
        )
    return name


# A key of [workflows]: checked one by one, so every glob is named with the other errors.
WorkflowName = Annotated[str, AfterValidator(_exact_workflow_name)]


def check_env_name(name: str, environ: Mapping[str, str] | None = None) -> str:
    """``name`` if it is a plausible environment variable name; never echoes a bad one.

    >>> check_env_name("PAGERDUTY_ROUTING_KEY")
    'PAGERDUTY_ROUTING_KEY'
    >>> try:
    ...     check_env_name("R0ABCDEFGHIJ1234567890KLMNOPQRST")
    ... except ValueError as exc:
    ...     print(str(exc)[:33])
    must name an environment variable
    """
    environ = os.environ if environ is None else environ
    looks_like_secret = (
        not _ENV_NAME.fullmatch(name)
        or bool(_KEY_LIKE.fullmatch(name))
        or any(value == name for key, value in environ.items() if not _names_a_variable(key))
    )
    if looks_like_secret:
        raise ValueError(
            "must name an environment variable, and this looks like a key or password itself: "
            "remove it from the configuration, rotate it, and put its variable's NAME here "
            "(e.g. PAGERDUTY_ROUTING_KEY)"
        )
    return name


def _names_a_variable(key: str) -> bool:
    """Variables whose value is itself a variable name (``DRIFTLINE_STORE__PASSWORD_ENV``)."""
    upper = key.upper()
    return upper.endswith("_ENV") or (upper.startswith(ENV_PREFIX) and "__" in upper)


def _env_name_field(value: str) -> str:
    return check_env_name(value)


def refuse_credentials(url: str, remedy: str, *, users: bool = False) -> str:
    """``url`` if it carries no password, token or key; the error never repeats them.

    Refused: ``user:password@``, a user name that looks like a token (or any user, unless
    ``users``), and a query parameter named like a password, token or key. ``url`` may be a
    comma-separated list of servers (``kafka.bootstrap_servers``). ``remedy`` ends the message:
    where the secret belongs instead.

    >>> refuse_credentials("clickhouse://driftline_writer@ch:8123/db", "nowhere", users=True)
    'clickhouse://driftline_writer@ch:8123/db'
    >>> for url in ("http://admin:S3CR3T@grafana:3000", "b:9092,u:S3CR3T@b2:9092",
    ...             "clickhouse://S3CR3T_token@ch/db", "clickhouse://ch/db?password=S3CR3T",
    ...             "clickhouse://u:S3/CR3T@ch/db", "clickhouse://u@corp:S3CR3T@ch/db"):
    ...     try:
    ...         refuse_credentials(url, "set it in X_ENV", users=True)
    ...     except ValueError as exc:
    ...         assert "S3CR3T" not in str(exc)
    ...         print(str(exc).split(";")[0])
    must not contain a password
    must not contain a password
    must not carry a user name that looks like a token or password (write the user name only)
    must not carry a password, token or key as a query parameter
    must not contain a password
    must not contain a password
    """
    for item in url.split(","):
        rest = item.strip().split("://", 1)[-1]
        # The user ends at an "@"; a pasted password may hold "@", "/", "?" or "#" itself.
        users_seen = (rest.partition("@")[0], rest.rpartition("@")[0]) if "@" in rest else ()
        if any(":" in user for user in users_seen):
            raise ValueError(f"must not contain a password; {remedy}")
        if users_seen and not users:
            raise ValueError(f"must not carry a user or password; {remedy}")
        if any(_token_like(unquote(user)) for user in users_seen):
            raise ValueError(
                "must not carry a user name that looks like a token or password (write the "
                f"user name only); {remedy}"
            )
        query = rest.partition("?")[2].partition("#")[0]
        if any(_secret_named(name) for name, _ in parse_qsl(query, keep_blank_values=True)):
            raise ValueError(
                f"must not carry a password, token or key as a query parameter; {remedy}"
            )
    return url


def _secret_named(name: str) -> bool:
    """``name`` has a word (snake, kebab or camel case) that names a secret.

    >>> [_secret_named(n) for n in ("apiKey", "X-Amz-Signature", "S3CR3T_token", "design")]
    [True, True, True, False]
    """
    words = {word.lower() for word in _WORD.findall(name)} | {name.lower()}
    return not words.isdisjoint(_SECRET_WORDS)


def _token_like(user: str) -> bool:
    """A URL user name that is a secret: named like one, a long key, or mixed like one."""
    mixed = len(user) >= 16 and all(re.search(c, user) for c in ("[a-z]", "[A-Z]", "[0-9]"))
    return _secret_named(user) or bool(_KEY_LIKE.fullmatch(user.upper())) or mixed


def redacted_url(url: str) -> str:
    """``url`` without what may be secret (a webhook's path, a query, a user): for printing.

    >>> redacted_url("https://hooks.slack.com/services/T000/B000/XXXXXXXX")
    'https://hooks.slack.com/<redacted>'
    >>> redacted_url("https://events.pagerduty.com")
    'https://events.pagerduty.com'
    """
    try:
        parts = urlsplit(url)
    except ValueError:  # a broken IPv6 host
        return "<redacted>"
    host = parts.netloc.rpartition("@")[2]
    if not parts.scheme or not host:
        return "<redacted>"
    secret = parts.path.strip("/") or parts.query or parts.fragment or "@" in parts.netloc
    return f"{parts.scheme}://{host}" + ("/<redacted>" if secret else "")


def printable(settings: Settings) -> dict[str, Any]:
    """The resolved settings as JSON-ready data, with each route's URL (and the events URL's
    query) redacted.

    A webhook URL (Slack's) carries its secret in the path; the other URLs are refused at
    load when they carry one (:func:`refuse_credentials`).
    """
    data = settings.model_dump(mode="json")
    events_url = data["pagerduty"]["events_url"]
    if "?" in events_url or "#" in events_url:  # a query may carry a code the check missed
        data["pagerduty"]["events_url"] = redacted_url(events_url)
    for route in data["pagerduty"]["routes"]:
        if route.get("url"):
            route["url"] = redacted_url(route["url"])
    return data


class _Section(BaseModel):
    # No NaN or infinity anywhere: one reaches costs, budgets and pages (JSON has neither).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class KafkaSettings(_Section):
    # None: start the embedded broker (tansu) on a free loopback port.
    bootstrap_servers: str | None = None
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password_env: str = "DRIFTLINE_KAFKA_SASL_PASSWORD"
    ssl_cafile: Path | None = None
    consumer_group: str = "driftline"
    partitions: int = Field(4, ge=1, le=1024)
    replication_factor: int = Field(1, ge=1, le=7)
    # librdkafka/aiokafka consumers join groups slowly against tansu with longer values.
    session_timeout_ms: int = Field(6000, ge=1000, le=300_000)
    input_format: Literal["otlp_proto", "otlp_json"] = "otlp_proto"
    max_message_bytes: int = Field(4 * 1024 * 1024, ge=64 * 1024)

    _sasl_password_env_is_a_name = field_validator("sasl_password_env")(_env_name_field)

    @field_validator("bootstrap_servers")
    @classmethod
    def _no_credentials(cls, servers: str | None) -> str | None:
        remedy = (
            "give the user as kafka.sasl_username and the password in the environment variable "
            "named by kafka.sasl_password_env"
        )
        return None if servers is None else refuse_credentials(servers, remedy)

    @property
    def sasl_password(self) -> str | None:
        return os.environ.get(self.sasl_password_env) or None


class CollectorSettings(_Section):
    host: str = "127.0.0.1"
    grpc_port: int = Field(4317, ge=0, le=65535)
    http_port: int = Field(4318, ge=0, le=65535)
    # rotel's default (8192 spans) makes messages larger than the broker accepts.
    traces_batch_max_size: int = Field(1000, ge=1, le=100_000)
    batch_timeout_ms: int = Field(200, ge=1, le=60_000)
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "lz4"
    # Off: each OTLP export request becomes one Kafka message (SDKs already batch). rotel's
    # batcher (0.0.1-alpha10) drops the resource of spans split across batches, and drops
    # whole requests larger than traces_batch_max_size; the two settings above apply only
    # when this is on.
    batching: bool = False


class EmbeddedSettings(_Section):
    broker_port: int = Field(0, ge=0, le=65535)  # 0: pick a free loopback port
    data_dir: Path = Path("var")
    start_timeout_s: float = Field(30.0, gt=0)


class StoreSettings(_Section):
    # Embedded: chdb://RELATIVE/PATH or chdb:///ABSOLUTE/PATH.
    # Server: clickhouse://user@host:8123/db (clickhouses:// for TLS).
    url: str = "chdb://var/chdb"  # default: embedded.data_dir + "/chdb"
    password_env: str = "CLICKHOUSE_PASSWORD"
    # What `driftline sql` connects as without --store/--write: a read-only server user.
    reader_url: str | None = None
    reader_password_env: str = "CLICKHOUSE_READER_PASSWORD"
    secure: bool = False
    ttl_days: int = Field(90, ge=1, le=3650)
    # Rows held in memory before a write (a row is about 1 KB): a bound, not a wish list.
    batch_rows: int = Field(50_000, ge=1, le=1_000_000)
    batch_seconds: float = Field(2.0, gt=0)
    baseline_snapshot_s: float = Field(60.0, gt=0)

    @field_validator("url", "reader_url")
    @classmethod
    def _known_scheme(cls, url: str | None, info: ValidationInfo) -> str | None:
        if url is None:
            return None
        if not url.startswith(("chdb://", "clickhouse://", "clickhouses://")):
            raise ValueError("must start with chdb://, clickhouse:// or clickhouses://")
        if url == "chdb://":
            raise ValueError("give a path, e.g. chdb://var/chdb or chdb:///abs/path")
        reader = info.field_name == "reader_url"
        variable = "store.reader_password_env" if reader else "store.password_env"
        return refuse_credentials(
            url, f"set it in the environment variable named by {variable}", users=True
        )

    _password_envs_are_names = field_validator("password_env", "reader_password_env")(
        _env_name_field
    )

    @property
    def password(self) -> str | None:
        return os.environ.get(self.password_env) or None


class StreamSettings(_Section):
    trace_grace_s: float = Field(5.0, ge=0)  # wait after the root span ends for late children
    trace_timeout_s: float = Field(120.0, gt=0)  # close a trace with no root after this
    max_open_traces: int = Field(200_000, ge=100)
    max_trace_spans: int = Field(100_000, ge=1_000)  # one trace's spans; at it, it closes
    max_span_attributes: int = Field(32, ge=0, le=1024)
    max_attribute_chars: int = Field(256, ge=16, le=65_536)
    batch_max_messages: int = Field(64, ge=1)
    batch_max_wait_s: float = Field(0.5, gt=0)


class IngestSettings(_Section):
    # Spans dated outside [arrival - max_past_s, arrival + max_future_s] are dead-lettered.
    max_past_s: float = Field(7 * 86400.0, gt=0)
    max_future_s: float = Field(3600.0, ge=0)
    # Free attribute keys an event keeps (fnmatch patterns). None: the built-in list of
    # request parameters, usage, ids and endpoints (schemas/attributes.py), never content.
    attributes_allow: list[str] | None = None
    store_content: bool = False  # keep every attribute, prompts and completions too
    dlq_content: bool = False  # dead letters carry the whole span, or the message's bytes


class EngineSettings(_Section):
    # Read otlp_metrics: store serving-engine metrics and give each request its engine's
    # KV usage, queue depth and preemption rate as of its start (docs/engine-metrics.md).
    enabled: bool = True
    # The newest report at or before a request's start is used if at most this old.
    staleness_s: float = Field(60.0, gt=0, le=900)
    # How far back each worker reads otlp_metrics when it starts.
    lookback_s: float = Field(300.0, gt=0, le=86_400)
    # Engine alerts (streams/monitor/engine_conditions.py): KV cache saturated, preemptions
    # rising, queue growing; paged like any alert, dedup key engine/<instance>/<condition>/<model>.
    alerts: bool = True
    kv_usage_high: float = Field(0.95, gt=0, le=1)  # opens at or above, once sustained
    kv_usage_clear: float = Field(0.90, ge=0, lt=1)  # open while above
    preemptions_per_s_high: float = Field(0.1, gt=0)  # open while above half of it
    queue_waiting_high: float = Field(20.0, gt=0)  # requests waiting; open while above half
    condition_for_s: float = Field(120.0, ge=0, le=86_400)  # bad at every report this long
    hold_down_s: float = Field(300.0, ge=0, le=86_400)  # back within bounds this long
    check_s: float = Field(1.0, gt=0, le=60)  # how often new reports are judged
    max_engines: int = Field(1_000, ge=1)  # (model, instance) pairs tracked; more are counted
    # `driftline up` scrapes these Prometheus /metrics URLs itself (collectors/scrape.py) and
    # publishes the engine metrics to otlp_metrics, for a stack without an OTel Collector.
    # Empty: no scraping (the collector's prometheus/engines receiver does it).
    scrape_targets: list[str] = []
    scrape_interval_s: float = Field(15.0, gt=0, le=3_600)

    @field_validator("scrape_targets")
    @classmethod
    def _targets_are_http_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            parts = urlsplit(url)
            try:
                parts.port  # noqa: B018 (raises on a port that is not a number in range)
            except ValueError as exc:
                raise ValueError(f"{url!r}: {exc}") from exc
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(
                    f"{url!r} is not an http:// or https:// URL with a host "
                    "(e.g. http://vllm-0.internal:8000/metrics)"
                )
            if parts.username is not None or parts.password is not None:
                # The URL is logged when its target fails; a password is never in the file.
                raise ValueError(f"{parts.hostname}: a scrape URL carries no user or password")
        if len(set(urls)) != len(urls):
            raise ValueError("a URL is listed twice")
        return urls

    @model_validator(mode="after")
    def _clear_below_high(self) -> EngineSettings:
        if self.kv_usage_clear >= self.kv_usage_high:
            raise ValueError(
                f"engines.kv_usage_clear ({self.kv_usage_clear}) must be below "
                f"engines.kv_usage_high ({self.kv_usage_high})"
            )
        return self


class WorkerSettings(_Section):
    # The worker's own telemetry: /metrics (Prometheus text), /healthz and /readyz on one
    # HTTP port (docs/metrics.md). 0: off. 9464 is the port Prometheus exporters of the
    # OpenTelemetry SDKs use.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(9464, ge=0, le=65535)
    # Alerts about the worker itself (streams/selfalerts.py), sent from the worker straight
    # to the paging routes, not through Kafka: dedup key pipeline/<name>/<condition>/.
    # None: the host name (a container's in compose); set it when workers share a host.
    name: str | None = Field(None, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
    self_alerts: bool = True
    self_alert_check_s: float = Field(5.0, gt=0, le=300)  # how often the conditions are read
    self_alert_for_s: float = Field(60.0, ge=0)  # a condition holds this long before it opens
    self_alert_hold_down_s: float = Field(300.0, ge=0)  # clear this long before it resolves
    self_alert_lag_records: int = Field(10_000, ge=1)  # records behind, all source partitions
    self_alert_dead_letters_per_s: float = Field(1.0, gt=0)  # dead-lettered spans, records /s
    # Dead man's switch: while the worker is ready and no self-alert is open, it requests
    # the URL held in this environment variable every heartbeat_s (a heartbeat monitor's
    # ping URL carries its token, so it is never written in the file).
    heartbeat_url_env: str | None = None
    heartbeat_s: float = Field(60.0, ge=1, le=3600)
    heartbeat_method: Literal["GET", "POST"] = "GET"

    @field_validator("heartbeat_url_env")
    @classmethod
    def _heartbeat_env_is_a_name(cls, name: str | None) -> str | None:
        return None if name is None else check_env_name(name)


class BudgetSettings(_Section):
    max_tokens_per_request: int | None = Field(None, gt=0)
    max_retries_per_request: int | None = Field(None, ge=0)
    max_loop_depth: int | None = Field(None, ge=1)
    max_amplification: float | None = Field(None, gt=0)
    tokens_per_window: int | None = Field(None, gt=0)
    cost_usd_per_window: float | None = Field(None, gt=0)
    window_s: float = Field(3600.0, gt=0)
    # Cost budget for a 30-day period; burn-rate alerts compare spend to it. At least a
    # millionth of a dollar (detectors.burn_rate.MIN_MONTHLY_BUDGET_USD): a smaller one's
    # share of a five-minute window rounds to nothing.
    monthly_cost_usd: float | None = Field(None, ge=1e-6)


class WorkflowSettings(_Section):
    allowed_models: list[str] | None = None  # None: any model is allowed
    # How an answering model matches allowed_models: "alias" lets an undated name cover its
    # dated snapshots (gpt-4o-mini covers gpt-4o-mini-2024-07-18), "exact" does not.
    model_match: Literal["alias", "exact"] = "alias"
    registered_bundles: list[str] | None = None  # None: bundle registry not enforced
    registered_model_versions: list[str] | None = None
    budgets: BudgetSettings = BudgetSettings()
    tenants: dict[str, BudgetSettings] = {}
    routes: dict[str, BudgetSettings] = {}


class DetectorSettings(_Section):
    warmup_events: int = Field(500, ge=20)
    window_events: int = Field(500, ge=20)
    # Mean number of stationary events between false alarms across all metrics of one
    # (workflow, bundle); split evenly across metrics.
    arl0_events: float = Field(1_000_000.0, ge=1000)
    # None: all. Names are checked against the detectors' metrics by `config check` and at
    # the start of the worker and replay (this module may not import the detectors).
    enabled_metrics: list[str] | None = None

    @field_validator("enabled_metrics")
    @classmethod
    def _some_metric(cls, metrics: list[str] | None) -> list[str] | None:
        if metrics is not None and not metrics:
            raise ValueError(
                "an empty list would turn drift detection off for every workflow; leave the "
                "key out to run every metric, or list the ones to run"
            )
        return metrics

    # Bundles tracked per workflow (least recently seen is dropped): bounds the state.
    max_bundles_per_workflow: int = Field(2, ge=1, le=16)
    # Workflows one worker's monitor tracks (about 90 KB each once its references are
    # frozen): past it, a new name replaces one still without a reference, else its records
    # are not monitored and one warning alert (budget/*/tracked_workflows/) says so.
    max_workflows: int = Field(2_000, ge=1)
    # A new bundle's first seconds of event time are left out of its reference: they are
    # the early steps of its traces, not a sample of its steady traffic.
    settle_s: float = Field(60.0, ge=0)
    # Two bundles with events within this much event time serve "at once" (canary).
    canary_active_s: float = Field(600.0, gt=0)


class AlertSettings(_Section):
    # An alert resolves once its condition has been clear for this long (event time).
    hold_down_s: float = Field(300.0, ge=0)
    # A workflow's event-time clock moves forward along its records only across gaps up to
    # this long; a record beyond a longer gap moves it only once a second batch confirms
    # the jump, so one far-future record resolves nothing.
    max_clock_step_s: float = Field(300.0, gt=0)
    # Open alerts of one kind (drift, budget, routing) one workflow may hold: past it, a new
    # one is not opened but counted, and one warning (budget/<workflow>/open_alerts/) lists
    # them. Bounds the pages a single workflow can send at once.
    max_open_per_workflow_kind: int = Field(20, ge=1)
    runbook_base_url: str = "https://runbooks.example.com/driftline"
    dashboard_base_url: str = "http://localhost:3000"

    @field_validator("runbook_base_url", "dashboard_base_url")
    @classmethod
    def _no_credentials(cls, url: str) -> str:
        # Every alert carries these links, and so every page and webhook message.
        remedy = "the link goes into every alert and page, and people sign in to it themselves"
        return refuse_credentials(url, remedy)


class PagerDutyRoute(_Section):
    workflow: str = "*"
    min_severity: Literal["critical", "error", "warning", "info"] = "warning"
    routing_key_env: str = "PAGERDUTY_ROUTING_KEY"
    kind: Literal["pagerduty", "webhook"] = "pagerduty"
    url: str | None = None  # None: pagerduty.events_url
    webhook_format: Literal["slack", "alertmanager"] = "slack"

    _routing_key_env_is_a_name = field_validator("routing_key_env")(_env_name_field)


class PagerDutySettings(_Section):
    events_url: str = DEFAULT_PAGERDUTY_EVENTS_URL
    max_events_per_minute: int = Field(120, ge=1)
    ledger_retention_s: float = Field(7 * 86400.0, gt=0)
    routes: list[PagerDutyRoute] = []

    @field_validator("events_url")
    @classmethod
    def _events_url_without_credentials(cls, url: str) -> str:
        # config check prints it, and the HTTP client would send a user and password in it
        # with every event as Basic auth.
        remedy = "PagerDuty takes the routing key (routing_key_env), nothing in the URL"
        return refuse_credentials(url, remedy)


class PriceOverride(_Section):
    """USD per million tokens."""

    input_per_mtok: float = Field(ge=0, le=MAX_PRICE_PER_MTOK)
    output_per_mtok: float = Field(ge=0, le=MAX_PRICE_PER_MTOK)
    cache_read_per_mtok: float | None = Field(None, ge=0, le=MAX_PRICE_PER_MTOK)  # None: input
    cache_write_per_mtok: float | None = Field(None, ge=0, le=MAX_PRICE_PER_MTOK)  # None: input


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    kafka: KafkaSettings = KafkaSettings()
    collector: CollectorSettings = CollectorSettings()
    embedded: EmbeddedSettings = EmbeddedSettings()
    store: StoreSettings = StoreSettings()
    streams: StreamSettings = StreamSettings()
    ingest: IngestSettings = IngestSettings()
    engines: EngineSettings = EngineSettings()
    worker: WorkerSettings = WorkerSettings()
    workflows: dict[WorkflowName, WorkflowSettings] = {}
    detectors: DetectorSettings = DetectorSettings()
    alerts: AlertSettings = AlertSettings()
    pagerduty: PagerDutySettings = PagerDutySettings()
    prices: dict[str, PriceOverride] = {}

    @model_validator(mode="before")
    @classmethod
    def _store_beside_embedded_data(cls, data: Any) -> Any:
        # With no store.url given, the embedded store lives in embedded.data_dir, so one
        # setting moves all local state.
        if not isinstance(data, dict):
            return data
        store = data.get("store")
        if isinstance(store, dict) and "url" in store:
            return data
        if isinstance(store, StoreSettings) and "url" in store.model_fields_set:
            return data
        embedded = data.get("embedded")
        if isinstance(embedded, EmbeddedSettings):
            data_dir = str(embedded.data_dir)
        elif isinstance(embedded, dict) and embedded.get("data_dir"):
            data_dir = str(embedded["data_dir"])
        else:
            return data
        url = f"chdb://{data_dir}/chdb"
        if isinstance(store, StoreSettings):
            data = {**data, "store": store.model_copy(update={"url": url})}
        else:
            data = {**data, "store": {**(store or {}), "url": url}}
        return data

    @model_validator(mode="before")
    @classmethod
    def _workflow_defaults_merge(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("workflows"), dict):
            return data
        workflows: dict[str, Any] = data["workflows"]
        if WORKFLOW_DEFAULTS not in workflows:
            return data
        defaults = _plain(workflows[WORKFLOW_DEFAULTS])
        merged = {
            name: value if name == WORKFLOW_DEFAULTS else _merged(defaults, _plain(value))
            for name, value in workflows.items()
        }
        return {**data, "workflows": merged}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment over file (passed as init kwargs) over defaults.
        return (env_settings, init_settings)


def _plain(value: Any) -> Any:
    """A section as a dict of what was set (models from overrides, dicts from TOML)."""
    if isinstance(value, BaseModel):
        return value.model_dump(exclude_unset=True)
    return value


def _merged(defaults: Any, specific: Any) -> Any:
    """``specific`` over ``defaults``, table by table; anything else is replaced whole.

    >>> _merged({"budgets": {"window_s": 60, "max_loop_depth": 4}}, {"budgets": {"window_s": 5}})
    {'budgets': {'window_s': 5, 'max_loop_depth': 4}}
    """
    if not isinstance(defaults, dict) or not isinstance(specific, dict):
        return specific
    out = dict(defaults)
    for key, value in specific.items():
        out[key] = _merged(defaults[key], value) if key in defaults else value
    return out


def env_overrides(environ: Mapping[str, str] | None = None) -> dict[str, tuple[str, ...]]:
    """Each ``DRIFTLINE_<SECTION>__<KEY>`` variable and the settings path it sets (lowercase)."""
    environ = os.environ if environ is None else environ
    found = {}
    for name in environ:
        upper = name.upper()
        if upper.startswith(ENV_PREFIX) and "__" in upper:
            found[name] = tuple(upper.removeprefix(ENV_PREFIX).lower().split("__"))
    return found


def _unknown_env_sections(environ: Mapping[str, str] | None = None) -> list[str]:
    sections = sorted(Settings.model_fields)
    problems = []
    for name, path in sorted(env_overrides(environ).items()):
        if path[0] not in Settings.model_fields:
            close = difflib.get_close_matches(path[0], sections, n=1)
            hint = f" (did you mean {ENV_PREFIX}{close[0].upper()}__...?)" if close else ""
            problems.append(
                f"  {name}: no section {path[0]!r}{hint}; sections: {', '.join(sections)} "
                "(from the environment)"
            )
    return problems


def _source_of(loc: tuple[str, ...], file_data: dict[str, Any], file: str | None) -> str:
    """Where the value at ``loc`` came from: an environment variable, the file, or defaults."""
    lowered = tuple(part.lower() for part in loc)
    for name, path in env_overrides().items():
        if lowered[: len(path)] == path or path[: len(lowered)] == lowered:
            return f"from the environment, {name}"
    for name in os.environ:  # a whole section as JSON: DRIFTLINE_PRICES='{"m": {...}}'
        if lowered and name.upper() == f"{ENV_PREFIX}{lowered[0].upper()}":
            return f"from the environment, {name}"
    node: Any = file_data
    for part in loc:
        if not isinstance(node, dict) or part not in node:
            return "from the defaults" if node is file_data or file is None else f"in {file}"
        node = node[part]
    return f"in {file}" if file else "from the defaults"


def _format_errors(
    err: ValidationError, source: str, file_data: dict[str, Any], file: str | None
) -> list[str]:
    lines = [f"invalid configuration ({source}):"]
    for e in err.errors():
        loc = tuple(str(p) for p in e["loc"] if p != "[key]")  # a bad key: the key's path
        message = str(e["msg"]).removeprefix("Value error, ")
        if not loc:  # a check across sections: its message starts with the field
            lines.append(f"  {message}")
            continue
        lines.append(f"  {'.'.join(loc)}: {message} ({_source_of(loc, file_data, file)})")
    return lines


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The file to read: the explicit one, ``$DRIFTLINE_CONFIG``, or ./driftline.toml if present."""
    if explicit:
        return Path(explicit)
    if env := os.environ.get(ENV_CONFIG_FILE):
        return Path(env)
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.exists() else None


# No configuration is near this; a larger file (or a device such as /dev/zero given by
# mistake) is refused before it is read whole.
MAX_CONFIG_BYTES = 1 << 20


def _read_config_text(file: Path) -> str:
    """The file's text: at most ``MAX_CONFIG_BYTES`` of UTF-8."""
    with file.open("rb") as handle:
        raw = handle.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"configuration file {file} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        return raw.decode("utf-8-sig")  # a byte-order mark, as some editors save text
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file} is not UTF-8 text (byte {exc.start})") from None


def load_settings(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Read and validate the configuration; raise :class:`ConfigError` naming bad fields."""
    file = config_path(path)
    data: dict[str, Any] = {}
    source = "no file: defaults and environment"
    if file is not None:
        source = f"{file} and environment"
        try:
            data = tomllib.loads(_read_config_text(file))
        except FileNotFoundError as exc:
            raise ConfigError(f"configuration file not found: {file}") from exc
        except OSError as exc:
            raise ConfigError(f"configuration file {file} unreadable: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file} is not valid TOML: {exc}") from exc
        except RecursionError:
            raise ConfigError(f"{file} is not valid TOML: nested too deeply") from None
    file_data = dict(data)
    data.update(overrides)
    unknown_sections = _unknown_env_sections()
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        lines = _format_errors(exc, source, file_data, str(file) if file else None)
        raise ConfigError(*lines, *unknown_sections) from None
    except SettingsError as exc:
        # A variable for a list or table field must hold JSON; pydantic-settings raises before
        # validation and names only the section.
        raise ConfigError(_unparsable_variables(exc)) from None
    if unknown_sections:
        raise ConfigError(f"invalid configuration ({source}):", *unknown_sections)
    return settings


def _unparsable_variables(exc: SettingsError) -> str:
    """Which ``DRIFTLINE_`` variables could not be parsed, and what they must hold."""
    match = re.search(r'field "([^"]+)"', str(exc))
    section = match.group(1).upper() if match else ""
    names = sorted(
        name for name in os.environ if name.upper().startswith(f"{ENV_PREFIX}{section}") and section
    )
    where = ", ".join(names) or f"a {ENV_PREFIX} variable"
    return (
        f"invalid configuration (environment): {where}: a list or table setting must be "
        'given as JSON (for example [] or {"key": "value"}); ' + str(exc)
    )


def missing_secrets(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> tuple[list[str], list[str]]:
    """(errors, warnings): secrets a configured connection or route needs but cannot read.

    Errors: a ``[[pagerduty.routes]]`` entry whose key (or secret webhook URL) is unset, SASL
    without its password, a ClickHouse server user other than ``default`` without its password
    variable (set it empty for a user without one). Warning: no routes configured and
    ``$PAGERDUTY_ROUTING_KEY`` unset, so alerts reach ``llm_alerts`` and no pager.
    """
    env = os.environ if environ is None else environ
    errors: list[str] = []
    warnings: list[str] = []
    for i, route in enumerate(settings.pagerduty.routes):
        field = f"pagerduty.routes[{i}].routing_key_env"
        if route.kind == "pagerduty" and not env.get(route.routing_key_env):
            errors.append(
                f"{field}: {route.routing_key_env} is not set; this route pages PagerDuty for "
                f"workflows matching {route.workflow!r}, and every page would fail"
            )
        elif route.kind == "webhook" and route.url is None and not env.get(route.routing_key_env):
            errors.append(
                f"{field}: {route.routing_key_env} is not set; this webhook route has no url, "
                "so it reads its (secret) URL from that variable"
            )
    if not settings.pagerduty.routes and not env.get("PAGERDUTY_ROUTING_KEY"):
        warnings.append(
            "pagerduty.routes: none configured and PAGERDUTY_ROUTING_KEY is not set; alerts "
            "are written to llm_alerts but page no one"
        )
    heartbeat_env = settings.worker.heartbeat_url_env
    if heartbeat_env and not env.get(heartbeat_env):
        errors.append(
            f"worker.heartbeat_url_env: {heartbeat_env} is not set; the worker would send no "
            "heartbeat, and the monitor expecting it would page"
        )
    kafka = settings.kafka
    if kafka.security_protocol.startswith("SASL") and not env.get(kafka.sasl_password_env):
        errors.append(
            f"kafka.sasl_password_env: {kafka.sasl_password_env} is not set "
            f"(kafka.security_protocol = {kafka.security_protocol})"
        )
    store = settings.store
    for url_field, url, env_field, name in (
        ("store.url", store.url, "store.password_env", store.password_env),
        (
            "store.reader_url",
            store.reader_url,
            "store.reader_password_env",
            store.reader_password_env,
        ),
    ):
        if not url or not url.startswith(("clickhouse://", "clickhouses://")):
            continue
        user = url.split("://", 1)[1].split("@", 1)[0] if "@" in url else "default"
        if user != "default" and name not in env:
            errors.append(
                f"{env_field}: {name} is not set; {url_field} connects as {user!r} (set the "
                "variable empty if that user has no password)"
            )
    return errors, warnings
