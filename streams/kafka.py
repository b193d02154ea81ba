"""Kafka client settings built in one place from ``settings.kafka``.

Two client families read the same broker: confluent-kafka (librdkafka keys) for
the admin client, test consumers and tools, and Faust (aiokafka underneath) for
the stream worker. Both get the same bootstrap servers, security protocol, SASL
credentials and CA file, so a deployment against a secured Kafka needs no other
knob. The SASL password comes only from the environment variable named by
``kafka.sasl_password_env``.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from typing import Any, Final

from driftline.config import KafkaSettings, StreamSettings

# Against tansu, librdkafka/aiokafka groups join quickly only with a short session timeout.
HEARTBEAT_FRACTION = 6
# Short-lived admin clients log notices on close and connection failures once the broker is
# gone; real failures surface as exceptions from their calls.
QUIET_ADMIN = {"log_level": 2}


class KafkaConfigError(ValueError):
    """The Kafka settings cannot produce a working client configuration."""


def bootstrap_of(kafka: KafkaSettings, bootstrap_servers: str | None = None) -> str:
    """The bootstrap list to use: the explicit one, else ``kafka.bootstrap_servers``.

    >>> bootstrap_of(KafkaSettings(), "127.0.0.1:9092")
    '127.0.0.1:9092'
    """
    servers = bootstrap_servers or kafka.bootstrap_servers
    if not servers:
        raise KafkaConfigError(
            "no Kafka to connect to: set kafka.bootstrap_servers (or "
            "DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS), or start the embedded stack with `driftline up`"
        )
    return servers


def _uses_sasl(kafka: KafkaSettings) -> bool:
    return kafka.security_protocol.startswith("SASL_")


def _uses_ssl(kafka: KafkaSettings) -> bool:
    return kafka.security_protocol.endswith("SSL")


def _sasl_password(kafka: KafkaSettings) -> str:
    password = kafka.sasl_password
    if password is None:
        raise KafkaConfigError(
            f"kafka.security_protocol is {kafka.security_protocol} but the environment variable "
            f"{kafka.sasl_password_env} (kafka.sasl_password_env) is not set"
        )
    return password


def _check_sasl(kafka: KafkaSettings) -> None:
    if _uses_sasl(kafka) and (kafka.sasl_mechanism is None or kafka.sasl_username is None):
        raise KafkaConfigError(
            f"kafka.security_protocol is {kafka.security_protocol}: set kafka.sasl_mechanism "
            "and kafka.sasl_username"
        )


def confluent_config(
    kafka: KafkaSettings, bootstrap_servers: str | None = None, **extra: Any
) -> dict[str, Any]:
    """librdkafka configuration common to producers, consumers and the admin client.

    ``extra`` keys use librdkafka spelling (``group.id``), passed as ``**{...}``.

    >>> confluent_config(KafkaSettings(), "127.0.0.1:9092", **{"client.id": "t"})
    {'bootstrap.servers': '127.0.0.1:9092', 'security.protocol': 'PLAINTEXT', 'client.id': 't'}
    """
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap_of(kafka, bootstrap_servers),
        "security.protocol": kafka.security_protocol,
    }
    _check_sasl(kafka)
    if _uses_sasl(kafka):
        config["sasl.mechanism"] = kafka.sasl_mechanism
        config["sasl.username"] = kafka.sasl_username
        config["sasl.password"] = _sasl_password(kafka)
    if _uses_ssl(kafka) and kafka.ssl_cafile is not None:
        config["ssl.ca.location"] = str(kafka.ssl_cafile)
    config.update(extra)
    return config


def consumer_config(
    kafka: KafkaSettings,
    group_id: str,
    bootstrap_servers: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A confluent-kafka consumer reading from the start, joining fast against tansu.

    >>> c = consumer_config(KafkaSettings(), "g", "127.0.0.1:9092")
    >>> c["session.timeout.ms"], c["heartbeat.interval.ms"], c["auto.offset.reset"]
    (6000, 1000, 'earliest')
    """
    return confluent_config(
        kafka,
        bootstrap_servers,
        **{
            "group.id": group_id,
            "session.timeout.ms": kafka.session_timeout_ms,
            "heartbeat.interval.ms": max(100, kafka.session_timeout_ms // HEARTBEAT_FRACTION),
            "auto.offset.reset": "earliest",
            "fetch.message.max.bytes": kafka.max_message_bytes,
            **extra,
        },
    )


def producer_config(
    kafka: KafkaSettings, bootstrap_servers: str | None = None, **extra: Any
) -> dict[str, Any]:
    """A confluent-kafka producer allowed to send messages up to ``kafka.max_message_bytes``."""
    return confluent_config(
        kafka,
        bootstrap_servers,
        **{"message.max.bytes": kafka.max_message_bytes, "linger.ms": 5, **extra},
    )


def faust_broker_url(kafka: KafkaSettings, bootstrap_servers: str | None = None) -> str:
    """Faust broker URL: ``kafka://host:port;host2:port2``.

    >>> faust_broker_url(KafkaSettings(), "a:9092,b:9093")
    'kafka://a:9092;b:9093'
    """
    hosts = [h.strip() for h in bootstrap_of(kafka, bootstrap_servers).split(",") if h.strip()]
    return "kafka://" + ";".join(hosts)


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext:
    """A verifying TLS context, trusting ``kafka.ssl_cafile`` when given, else the system CAs."""
    cafile = str(kafka.ssl_cafile) if kafka.ssl_cafile is not None else None
    return ssl.create_default_context(cafile=cafile)


def faust_credentials(kafka: KafkaSettings) -> Any:
    """Faust ``broker_credentials`` for the security protocol, or None for PLAINTEXT."""
    import faust  # Faust is heavy to import; only the worker needs it.

    _check_sasl(kafka)
    if _uses_sasl(kafka):
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=_sasl_password(kafka),
            mechanism=kafka.sasl_mechanism,
            ssl_context=ssl_context(kafka) if _uses_ssl(kafka) else None,
        )
    if _uses_ssl(kafka):
        return faust.SSLCredentials(ssl_context(kafka))
    return None


def faust_settings(kafka: KafkaSettings, bootstrap_servers: str | None = None) -> dict[str, Any]:
    """Keyword arguments for ``faust.App`` that concern the broker connection.

    >>> s = faust_settings(KafkaSettings(partitions=3), "127.0.0.1:9092")
    >>> s["broker"], s["topic_partitions"], s["broker_session_timeout"]
    ('kafka://127.0.0.1:9092', 3, 6.0)
    """
    session_timeout_s = kafka.session_timeout_ms / 1000.0
    return {
        "broker": faust_broker_url(kafka, bootstrap_servers),
        "broker_credentials": faust_credentials(kafka),
        "broker_session_timeout": session_timeout_s,
        "broker_heartbeat_interval": max(0.1, session_timeout_s / HEARTBEAT_FRACTION),
        "topic_partitions": kafka.partitions,
        "topic_replication_factor": kafka.replication_factor,
        "consumer_auto_offset_reset": "earliest",
        "consumer_max_fetch_size": kafka.max_message_bytes,
        "producer_max_request_size": kafka.max_message_bytes,
    }


def create_topics(
    kafka: KafkaSettings,
    topics: Iterable[str],
    bootstrap_servers: str | None = None,
    timeout_s: float = 15.0,
) -> list[str]:
    """Create ``topics`` with ``kafka.partitions`` each; existing topics are left alone.

    Topics are created up front because a broker that auto-creates them (tansu does,
    with its own partition count) would give a Faust table changelog a different
    partition count than its source topic. Returns the topics that were created.
    """
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(confluent_config(kafka, bootstrap_servers, **QUIET_ADMIN))
    wanted = list(dict.fromkeys(topics))
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    missing = [t for t in wanted if t not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(t, kafka.partitions, kafka.replication_factor) for t in missing],
        request_timeout=timeout_s,
    )
    created = []
    for topic, future in futures.items():
        try:
            future.result(timeout=timeout_s)
            created.append(topic)
        except KafkaException as exc:
            error = exc.args[0]
            if error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise KafkaConfigError(f"could not create topic {topic!r}: {error.str()}") from exc
    return created


def topic_partition_counts(
    kafka: KafkaSettings, bootstrap_servers: str | None = None, timeout_s: float = 10.0
) -> dict[str, int]:
    """Partition count of every topic the broker reports (a metadata round trip)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(confluent_config(kafka, bootstrap_servers, **QUIET_ADMIN))
    metadata = admin.list_topics(timeout=timeout_s)
    return {name: len(t.partitions) for name, t in metadata.topics.items()}


# The stages a page waits for (decode, monitor, notify) gather a batch for at most this long:
# each waits its whole ``within`` when traffic is light, and three waits of the default
# batch_max_wait_s (0.5 s) were most of a page's latency once requests stopped waiting for
# their trace. Under load batches fill up by count before the wait ends.
PAGE_PATH_MAX_WAIT_S: Final = 0.1


def page_path_wait_s(streams: StreamSettings) -> float:
    """``within`` of a stage a page waits for: ``batch_max_wait_s``, at most 0.1 s.

    >>> page_path_wait_s(StreamSettings()), page_path_wait_s(StreamSettings(batch_max_wait_s=0.05))
    (0.1, 0.05)
    """
    return min(streams.batch_max_wait_s, PAGE_PATH_MAX_WAIT_S)
