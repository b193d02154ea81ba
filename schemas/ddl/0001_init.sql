-- driftline schema, version 1: request events, traces, alerts, deliveries, baselines, prices.
--
-- Placeholders: ${ttl_days} is replaced by settings.store.ttl_days when the file is applied
-- (schemas/ddl.py). Every statement is idempotent (IF NOT EXISTS) so a migration interrupted
-- halfway can simply be applied again.
--
-- Exactness under re-delivery. A span may reach the sink twice (worker crash before the offset
-- commit, rebalance, replay). Three layers keep every number exact:
--   1. The sink drops duplicates inside a batch and inserts with
--      `WHERE (workflow, start_ts, span_id) NOT IN (<keys already stored in the batch's time
--      range>)`, so a re-delivered span never reaches the table, nor the materialized views
--      that feed the rollups (views see only the rows actually inserted). This is what keeps
--      the rollups exact: an AggregatingMergeTree cannot un-add a duplicate later.
--   2. Each insert carries an insert_deduplication_token derived from the Kafka offsets of its
--      rows; a retried insert whose first attempt did land is dropped by the server. Every
--      table keeps the tokens of its last 1000 inserts (non_replicated_deduplication_window).
--   3. The raw tables are ReplacingMergeTree on the natural key and analysts read views with
--      FINAL, so even two writers racing on the same span (a rebalance overlap) are counted
--      once in llm_requests before and after background merges.

CREATE DATABASE IF NOT EXISTS driftline;

-- One row per LLM-call span. Analysts read driftline.llm_requests (below), not this table.
CREATE TABLE IF NOT EXISTS driftline.llm_requests_raw
(
    trace_id                String,
    span_id                 String,
    parent_span_id          String,
    start_ts                DateTime64(6, 'UTC'),
    end_ts                  DateTime64(6, 'UTC'),
    service                 LowCardinality(String),
    environment             LowCardinality(String),
    workflow                LowCardinality(String),
    agent                   LowCardinality(String),
    tenant                  LowCardinality(String),
    user_hash               String,
    session_id              String,
    route                   LowCardinality(String),
    operation               LowCardinality(String),
    provider                LowCardinality(String),
    request_model           LowCardinality(String),
    response_model          LowCardinality(String),
    model_version           LowCardinality(String),
    prompt_version          LowCardinality(String),
    retrieval_index_version LowCardinality(String),
    router_version          LowCardinality(String),
    bundle_id               LowCardinality(String),
    input_tokens            UInt64,
    output_tokens           UInt64,
    cache_read_tokens       UInt64,
    cache_write_tokens      UInt64,
    reasoning_tokens        UInt64,
    cost_usd                Nullable(Float64),
    price_source            LowCardinality(String),
    latency_ms              Float64,
    ttft_ms                 Nullable(Float64),
    queue_ms                Nullable(Float64),
    kv_cache_usage          Nullable(Float64),
    retry_attempt           UInt32,
    loop_depth              UInt32,
    tool_calls              UInt32,
    finish_reason           LowCardinality(String),
    output_chars            Nullable(UInt64),
    validation_failed       Bool,
    error_type              LowCardinality(String),
    status                  LowCardinality(String),
    attributes              Map(LowCardinality(String), String)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(start_ts)
ORDER BY (workflow, start_ts, span_id)
TTL toDateTime(start_ts) + INTERVAL ${ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 1000;

-- The deduplicated surface for analysts, dashboards and the query library. `model` is the
-- model that answered (response) or, when the provider did not say, the one requested.
-- FINAL per partition (do_not_merge_across_partitions_select_final) is exact and much faster:
-- a ReplacingMergeTree only ever collapses rows within one partition, and copies of a span
-- share their day. The same holds for every FINAL view below.
CREATE VIEW IF NOT EXISTS driftline.llm_requests AS
SELECT
    *,
    if(response_model != '', response_model, request_model) AS model
FROM driftline.llm_requests_raw FINAL
SETTINGS do_not_merge_across_partitions_select_final = 1;

-- One row per assembled trace. A trace closed by timeout may be summarized again when late
-- spans arrive; the latest summary (largest end_ts, then span_count) wins.
CREATE TABLE IF NOT EXISTS driftline.llm_traces_raw
(
    trace_id        String,
    workflow        LowCardinality(String),
    service         LowCardinality(String),
    environment     LowCardinality(String),
    tenant          LowCardinality(String),
    route           LowCardinality(String),
    root_span_id    String,
    start_ts        DateTime64(6, 'UTC'),
    end_ts          DateTime64(6, 'UTC'),
    span_count      UInt32,
    llm_call_count  UInt32,
    max_loop_depth  UInt32,
    input_tokens    UInt64,
    output_tokens   UInt64,
    total_tokens    UInt64,
    cost_usd        Nullable(Float64),
    unpriced_calls  UInt32,
    amplification   Nullable(Float64),
    retries         UInt32,
    error_count     UInt32,
    closed_by       LowCardinality(String),
    version         UInt64 MATERIALIZED toUnixTimestamp64Micro(end_ts) * 1000 + least(span_count, 999)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMMDD(start_ts)
ORDER BY (workflow, trace_id)
TTL toDateTime(start_ts) + INTERVAL ${ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 1000;

CREATE VIEW IF NOT EXISTS driftline.llm_traces AS
SELECT * FROM driftline.llm_traces_raw FINAL
SETTINGS do_not_merge_across_partitions_select_final = 1;

-- Alert lifecycle: one row per transition record (schemas/alert.py TRANSITION_FIELDS: open,
-- update while open, resolve). A re-delivered record has the same (alert_id, event_ts,
-- transition) and collapses.
CREATE TABLE IF NOT EXISTS driftline.llm_alerts_log
(
    alert_id        String,
    dedup_key       String,
    kind            LowCardinality(String),
    severity        LowCardinality(String),
    state           LowCardinality(String),
    opened_at       DateTime64(6, 'UTC'),
    resolved_at     Nullable(DateTime64(6, 'UTC')),
    workflow        LowCardinality(String),
    metric          LowCardinality(String),
    baseline_value  Nullable(Float64),
    current_value   Nullable(Float64),
    score           Float64,
    threshold       Nullable(Float64),
    bundle_id       LowCardinality(String),
    evidence        String,  -- JSON: window bounds, sample sizes, test used
    runbook_url     String,
    dashboard_url   String,
    transition      LowCardinality(String),  -- open | update | resolve
    event_ts        DateTime64(6, 'UTC')     -- event time of the transition
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(opened_at)
ORDER BY (alert_id, event_ts, transition)
TTL toDateTime(opened_at) + INTERVAL ${ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 1000;

CREATE VIEW IF NOT EXISTS driftline.llm_alerts AS
SELECT * FROM driftline.llm_alerts_log FINAL
SETTINGS do_not_merge_across_partitions_select_final = 1;

-- Current state of every alert: its latest transition.
CREATE VIEW IF NOT EXISTS driftline.llm_alerts_current AS
SELECT *
FROM driftline.llm_alerts_log FINAL
ORDER BY alert_id, event_ts DESC, transition = 'resolve' DESC
LIMIT 1 BY alert_id
SETTINGS do_not_merge_across_partitions_select_final = 1;

-- PagerDuty (and webhook) delivery log. Never holds a routing key: `target` is the route's
-- name or URL host.
CREATE TABLE IF NOT EXISTS driftline.alert_deliveries
(
    alert_id      String,
    dedup_key     String,
    event_action  LowCardinality(String),  -- trigger | resolve
    attempt       UInt16,
    status_code   UInt16,                  -- 0: no HTTP response (network error, timeout)
    outcome       LowCardinality(String),  -- accepted | retry | rejected | dead_letter | ...
    error         String,
    latency_ms    Float64,
    sent_at       DateTime64(6, 'UTC'),
    target        LowCardinality(String)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(sent_at)
ORDER BY (alert_id, event_action, attempt, sent_at)
TTL toDateTime(sent_at) + INTERVAL ${ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 1000;

-- Snapshots of baseline statistics per workflow, bundle and metric.
CREATE TABLE IF NOT EXISTS driftline.workflow_baselines
(
    snapshot_ts  DateTime64(6, 'UTC'),
    workflow     LowCardinality(String),
    bundle_id    LowCardinality(String),
    metric       LowCardinality(String),
    frozen       Bool,                     -- reference frozen after warm-up, or still warming
    n            UInt64,
    mean         Float64,
    std          Float64,
    p50          Nullable(Float64),
    p95          Nullable(Float64),
    p99          Nullable(Float64),
    extra        String                    -- JSON: categorical mix, histogram edges, ...
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(snapshot_ts)
ORDER BY (workflow, bundle_id, metric, snapshot_ts)
TTL toDateTime(snapshot_ts) + INTERVAL ${ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 1000;

-- Base token rates per provider and model (USD per million tokens), written from the price
-- book (streams/pricing.py) for the models the store has seen, so that SQL can answer "what did
-- prompt caching save" (schemas/queries/cache_savings.sql). Tiered prices are stored at their
-- base tier. The latest `updated_at` per (provider, model) wins.
CREATE TABLE IF NOT EXISTS driftline.model_prices
(
    provider             LowCardinality(String),
    model                LowCardinality(String),
    input_per_mtok       Float64,
    output_per_mtok      Float64,
    cache_read_per_mtok  Float64,
    cache_write_per_mtok Float64,
    source               LowCardinality(String),
    updated_at           DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (provider, model)
SETTINGS non_replicated_deduplication_window = 1000;
