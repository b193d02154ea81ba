#!/bin/sh
# Create driftline's Kafka topics; run once per deployment (the kafka-init service in
# docker-compose.yml runs it in the apache/kafka image, which ships kafka-topics.sh).
#
# Idempotent: an existing topic is left alone, but one whose partition count differs from
# TOPIC_PARTITIONS stops the deployment, because the workers route spans to partitions by
# murmur2(trace id) % kafka.partitions and a mismatch splits traces across workers.
#
# Environment:
#   KAFKA_BOOTSTRAP_SERVERS   host:port[,...]                 (default kafka:9092)
#   TOPIC_PARTITIONS          partitions per topic; must equal driftline's kafka.partitions
#   TOPIC_REPLICATION_FACTOR  replicas per partition; at most the number of brokers
#   TOPIC_MAX_MESSAGE_BYTES   largest record batch a topic accepts
#   TOPIC_RETENTION_HOURS     how long records are kept
#   KAFKA_TOPICS_BIN          path of kafka-topics.sh             (default /opt/kafka/bin/...)
set -eu

BOOTSTRAP="${KAFKA_BOOTSTRAP_SERVERS:-kafka:9092}"
PARTITIONS="${TOPIC_PARTITIONS:-6}"
REPLICATION="${TOPIC_REPLICATION_FACTOR:-1}"
MAX_MESSAGE_BYTES="${TOPIC_MAX_MESSAGE_BYTES:-4194304}"
RETENTION_HOURS="${TOPIC_RETENTION_HOURS:-168}"
KAFKA_TOPICS="${KAFKA_TOPICS_BIN:-/opt/kafka/bin/kafka-topics.sh}"

# The names in streams/topics.py (ALL_TOPICS); tests/unit/test_compose.py keeps them equal.
TOPICS="otlp_spans otlp_spans_dlq otlp_metrics llm_spans llm_events llm_alerts"

case "$PARTITIONS" in '' | *[!0-9]* | 0)
    echo "create-topics: TOPIC_PARTITIONS must be a positive integer, got '$PARTITIONS'" >&2
    exit 2 ;;
esac
case "$REPLICATION" in '' | *[!0-9]* | 0)
    echo "create-topics: TOPIC_REPLICATION_FACTOR must be a positive integer, got '$REPLICATION'" >&2
    exit 2 ;;
esac

retention_ms=$((RETENTION_HOURS * 3600 * 1000))

for topic in $TOPICS; do
    "$KAFKA_TOPICS" --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
        --topic "$topic" \
        --partitions "$PARTITIONS" \
        --replication-factor "$REPLICATION" \
        --config "max.message.bytes=$MAX_MESSAGE_BYTES" \
        --config "retention.ms=$retention_ms"

    # --describe prints "Topic: t  TopicId: ...  PartitionCount: N  ReplicationFactor: R ..."
    actual=$("$KAFKA_TOPICS" --bootstrap-server "$BOOTSTRAP" --describe --topic "$topic" \
        | sed -n 's/.*PartitionCount:[[:space:]]*\([0-9][0-9]*\).*/\1/p' | head -n 1)
    if [ "$actual" != "$PARTITIONS" ]; then
        echo "create-topics: topic $topic has ${actual:-unknown} partitions, expected" \
            "$PARTITIONS. Set DRIFTLINE_PARTITIONS to $actual, or grow the topic with" \
            "kafka-topics.sh --alter --partitions (see docs/deployment.md, 'Partitions')." >&2
        exit 1
    fi
    echo "create-topics: $topic ready ($PARTITIONS partitions, replication $REPLICATION)"
done
