"""Client configs from settings.kafka: same credentials for librdkafka and Faust/aiokafka.

librdkafka itself validates every key: each config is handed to a real client.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import faust
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from driftline.config import KafkaSettings
from driftline.streams.kafka import (
    KafkaConfigError,
    bootstrap_of,
    confluent_config,
    consumer_config,
    faust_broker_url,
    faust_credentials,
    faust_settings,
    producer_config,
)

PASSWORD_ENV = "DRIFTLINE_TEST_KAFKA_PASSWORD"


@pytest.fixture
def ca_file() -> Path:
    # The system CA bundle is a real PEM file both TLS stacks can load.
    path = Path(ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt")
    if not path.exists():
        pytest.skip("no system CA bundle on this machine")
    return path


def sasl_ssl(ca_file: Path) -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers="kafka-1:9093,kafka-2:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="driftline",
        sasl_password_env=PASSWORD_ENV,
        ssl_cafile=ca_file,
    )


def test_plaintext_clients_accept_the_config() -> None:
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:1")
    consumer = consumer_config(kafka, "g")
    assert consumer["session.timeout.ms"] == 6000
    assert consumer["heartbeat.interval.ms"] == 1000
    assert "sasl.username" not in consumer
    Consumer(consumer).close()
    Producer(producer_config(kafka)).flush(0)
    AdminClient(confluent_config(kafka))


def test_sasl_ssl_passes_credentials_to_librdkafka(
    monkeypatch: pytest.MonkeyPatch, ca_file: Path
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "s3cret")
    config = consumer_config(sasl_ssl(ca_file), "g")
    assert config["security.protocol"] == "SASL_SSL"
    assert config["sasl.mechanism"] == "SCRAM-SHA-512"
    assert (config["sasl.username"], config["sasl.password"]) == ("driftline", "s3cret")
    assert config["ssl.ca.location"] == str(ca_file)
    Consumer(config).close()


def test_sasl_without_password_names_the_variable(ca_file: Path) -> None:
    with pytest.raises(KafkaConfigError, match=PASSWORD_ENV):
        confluent_config(sasl_ssl(ca_file))


def test_sasl_without_mechanism_names_the_fields() -> None:
    kafka = KafkaSettings(bootstrap_servers="k:9092", security_protocol="SASL_PLAINTEXT")
    with pytest.raises(KafkaConfigError, match=r"kafka\.sasl_mechanism"):
        confluent_config(kafka)


def test_no_bootstrap_servers_says_what_to_set() -> None:
    with pytest.raises(KafkaConfigError, match=r"kafka\.bootstrap_servers"):
        bootstrap_of(KafkaSettings())
    assert bootstrap_of(KafkaSettings(bootstrap_servers="a:1"), "b:2") == "b:2"


def test_faust_gets_the_same_sasl_credentials(
    monkeypatch: pytest.MonkeyPatch, ca_file: Path
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "s3cret")
    kafka = sasl_ssl(ca_file)
    credentials = faust_credentials(kafka)
    assert isinstance(credentials, faust.SASLCredentials)
    assert (credentials.username, credentials.password) == ("driftline", "s3cret")
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert credentials.protocol.value == "SASL_SSL"
    assert isinstance(credentials.ssl_context, ssl.SSLContext)
    assert credentials.ssl_context.verify_mode == ssl.CERT_REQUIRED
    settings = faust_settings(kafka)
    assert settings["broker"] == "kafka://kafka-1:9093;kafka-2:9093"
    # A real Faust app accepts the whole set of broker settings.
    app = faust.App("cfg-test", autodiscover=False, web_enabled=False, **settings)
    conf_credentials = app.conf.broker_credentials
    assert isinstance(conf_credentials, faust.SASLCredentials)
    assert conf_credentials.username == "driftline"
    assert conf_credentials.protocol.value == "SASL_SSL"
    assert app.conf.broker_session_timeout == 6.0


def test_faust_ssl_only_and_plaintext(ca_file: Path) -> None:
    ssl_only = KafkaSettings(
        bootstrap_servers="k:9093", security_protocol="SSL", ssl_cafile=ca_file
    )
    assert isinstance(faust_credentials(ssl_only), faust.SSLCredentials)
    assert confluent_config(ssl_only)["ssl.ca.location"] == str(ca_file)
    assert faust_credentials(KafkaSettings(bootstrap_servers="k:9092")) is None


def test_partition_and_size_settings_reach_faust() -> None:
    kafka = KafkaSettings(partitions=8, max_message_bytes=2 * 1024 * 1024, session_timeout_ms=9000)
    settings = faust_settings(kafka, "h:1")
    assert settings["topic_partitions"] == 8
    assert settings["producer_max_request_size"] == 2 * 1024 * 1024
    assert settings["broker_session_timeout"] == 9.0
    assert settings["broker_heartbeat_interval"] == 1.5
    assert faust_broker_url(kafka, " a:1 , b:2 ") == "kafka://a:1;b:2"
