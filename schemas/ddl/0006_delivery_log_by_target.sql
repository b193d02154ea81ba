-- driftline schema, version 6: the delivery log's sort key names the route.
--
-- alert_deliveries is a ReplacingMergeTree, so its sort key is also its identity: two rows
-- with the same key collapse into one on merge. 0001 keyed it (alert_id, event_action,
-- attempt, sent_at), without `target`, so the records of one attempt sent to two routes
-- (PagerDuty and a webhook) became one row whenever their sent_at fell in the same
-- microsecond, and the delivery of one route vanished from the log. The key now ends with
-- (target, sent_at).
--
-- Why a copy and not ALTER TABLE ... MODIFY ORDER BY: ClickHouse may only append a column
-- added in the same ALTER to a sort key; `target` exists. So the table is copied into one
-- with the new key and the two are swapped (EXCHANGE TABLES: atomic; both embedded chdb and a
-- server's default Atomic database support it).
-- Idempotent: every step can run again after an interruption. The first step drops whatever
-- `_next` holds: before the swap a partial copy, after it the old table, every row of which
-- is already in the new one. Rows that 0001's key had already collapsed on merge cannot be
-- told apart again and stay one row. Run it with the writers stopped (as 0003): a delivery
-- written to the old table between the copy and the swap would be dropped with it.

DROP TABLE IF EXISTS driftline.alert_deliveries_next SYNC;

CREATE TABLE driftline.alert_deliveries_next
(
    alert_id      String,
    dedup_key     String,
    event_action  LowCardinality(String),
    attempt       UInt16,
    status_code   UInt16 COMMENT 'HTTP status; 0 when no response arrived (network error, timeout) or no request was made (unrouted, coalesced)',
    outcome       LowCardinality(String) COMMENT 'delivered (2xx) | retrying (429, 5xx or network error: tried again) | failed_permanent (other HTTP status, or the event could not be built or sent: not retried) | gave_up (retries exhausted) | unrouted (no route matched) | coalesced (not sent: superseded while queued, or already delivered)',
    error         String,
    latency_ms    Float64,
    sent_at       DateTime64(6, 'UTC'),
    target        LowCardinality(String) COMMENT '<route name>@<URL host>: never a routing key, never a URL path'
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(sent_at)
ORDER BY (alert_id, event_action, attempt, target, sent_at)
TTL toDateTime(sent_at) + INTERVAL ${ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 1000;

INSERT INTO driftline.alert_deliveries_next
SELECT alert_id, dedup_key, event_action, attempt, status_code, outcome, error, latency_ms,
       sent_at, target
FROM driftline.alert_deliveries;

EXCHANGE TABLES driftline.alert_deliveries AND driftline.alert_deliveries_next;

DROP TABLE IF EXISTS driftline.alert_deliveries_next SYNC;
