"""One settings object: ``driftline.toml`` plus environment, validated at start.

Precedence (highest first): environment variables ``DRIFTLINE_<SECTION>__<KEY>``,
then the TOML file, then defaults. Secrets (PagerDuty routing keys, the ClickHouse
password, Kafka SASL password) are read only from environment variables whose
*names* the file may give; a secret value written into the file is rejected.

A bad value fails at start with the field's dotted path, for example
``workflows.support-chat.budgets.max_tokens_per_request: Input should be greater
than 0``.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

DEFAULT_CONFIG_FILE = "driftline.toml"
ENV_CONFIG_FILE = "DRIFTLINE_CONFIG"
ENV_PREFIX = "DRIFTLINE_"
DEFAULT_PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"


class ConfigError(ValueError):
    """The configuration is invalid; the message names every bad field."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    batch_rows: int = Field(50_000, ge=1)
    batch_seconds: float = Field(2.0, gt=0)
    baseline_snapshot_s: float = Field(60.0, gt=0)

    @field_validator("url", "reader_url")
    @classmethod
    def _known_scheme(cls, url: str | None) -> str | None:
        if url is None:
            return None
        if not url.startswith(("chdb://", "clickhouse://", "clickhouses://")):
            raise ValueError("must start with chdb://, clickhouse:// or clickhouses://")
        if "@" in url and ":" in url.split("://", 1)[1].split("@", 1)[0]:
            raise ValueError(
                "must not contain a password; set it in the environment variable "
                "named by store.password_env"
            )
        return url

    @property
    def password(self) -> str | None:
        return os.environ.get(self.password_env) or None


class StreamSettings(_Section):
    trace_grace_s: float = Field(5.0, ge=0)  # wait after the root span ends for late children
    trace_timeout_s: float = Field(120.0, gt=0)  # close a trace with no root after this
    max_open_traces: int = Field(200_000, ge=100)
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


class BudgetSettings(_Section):
    max_tokens_per_request: int | None = Field(None, gt=0)
    max_retries_per_request: int | None = Field(None, ge=0)
    max_loop_depth: int | None = Field(None, ge=1)
    max_amplification: float | None = Field(None, gt=0)
    tokens_per_window: int | None = Field(None, gt=0)
    cost_usd_per_window: float | None = Field(None, gt=0)
    window_s: float = Field(3600.0, gt=0)
    # Cost budget for a 30-day period; burn-rate alerts compare spend to it.
    monthly_cost_usd: float | None = Field(None, gt=0)


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
    enabled_metrics: list[str] | None = None  # None: all
    # Bundles tracked per workflow (least recently seen is dropped): bounds the state.
    max_bundles_per_workflow: int = Field(2, ge=1, le=16)
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
    runbook_base_url: str = "https://runbooks.example.com/driftline"
    dashboard_base_url: str = "http://localhost:3000"


class PagerDutyRoute(_Section):
    workflow: str = "*"
    min_severity: Literal["critical", "error", "warning", "info"] = "warning"
    routing_key_env: str = "PAGERDUTY_ROUTING_KEY"
    kind: Literal["pagerduty", "webhook"] = "pagerduty"
    url: str | None = None  # None: pagerduty.events_url
    webhook_format: Literal["slack", "alertmanager"] = "slack"


class PagerDutySettings(_Section):
    events_url: str = DEFAULT_PAGERDUTY_EVENTS_URL
    max_events_per_minute: int = Field(120, ge=1)
    ledger_retention_s: float = Field(7 * 86400.0, gt=0)
    routes: list[PagerDutyRoute] = []


class PriceOverride(_Section):
    """USD per million tokens."""

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)
    cache_read_per_mtok: float | None = Field(None, ge=0)  # None: input rate
    cache_write_per_mtok: float | None = Field(None, ge=0)  # None: input rate


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
    workflows: dict[str, WorkflowSettings] = {}
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

    @model_validator(mode="after")
    def _no_secret_values_in_env_names(self) -> Settings:
        for route in self.pagerduty.routes:
            if not route.routing_key_env.replace("_", "").isalnum():
                raise ValueError(
                    "pagerduty.routes.routing_key_env must name an environment variable, "
                    "not hold the routing key itself"
                )
        return self

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


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"  {path}: {e['msg']}")
    return "\n".join(lines)


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The file to read: the explicit one, ``$DRIFTLINE_CONFIG``, or ./driftline.toml if present."""
    if explicit:
        return Path(explicit)
    if env := os.environ.get(ENV_CONFIG_FILE):
        return Path(env)
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.exists() else None


def load_settings(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Read and validate the configuration; raise :class:`ConfigError` naming bad fields."""
    file = config_path(path)
    data: dict[str, Any] = {}
    source = "defaults and environment"
    if file is not None:
        source = str(file)
        try:
            data = tomllib.loads(file.read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"configuration file not found: {file}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file} is not valid TOML: {exc}") from exc
    data.update(overrides)
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from None
