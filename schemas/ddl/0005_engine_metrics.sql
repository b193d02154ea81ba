-- driftline schema, version 5: serving-engine metrics (KV-cache usage, queue depth,
-- preemptions) as the engines publish them, read from otlp_metrics (streams/engine_metrics.py;
-- names in schemas/engine_metrics.py, columns in schemas/tables.py).
--
-- One row per data point. A message inserted again with its dedup token (a retried insert)
-- is dropped, and with it the rollup's block; a point delivered twice otherwise has the same
-- (engine, model, instance, metric, time) and collapses on merge: read with FINAL, or with
-- max/argMax, for exact answers before merges. Gauges are stored as reported, counters as
-- their running value (rates by difference), histograms as two rows <metric>:count and
-- <metric>:sum.

CREATE TABLE IF NOT EXISTS driftline.engine_metrics
(
    time           DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)),
    engine         LowCardinality(String),
    model          LowCardinality(String),
    instance       LowCardinality(String),
    metric         LowCardinality(String),
    value          Float64 CODEC(Gorilla, ZSTD(1)),
    source_metric  LowCardinality(String)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(time)
ORDER BY (engine, model, instance, metric, time)
TTL toDateTime(time) + INTERVAL ${ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 1000;

-- Per minute and engine: what the SRE dashboard's KV panel reads over long ranges. Only
-- aggregates that a point delivered twice cannot change (min, max, the last value), so the
-- rollup is exact under re-delivery without the raw table's merges.
CREATE TABLE IF NOT EXISTS driftline.rollup_engine_1m
(
    minute         DateTime('UTC'),
    engine         LowCardinality(String),
    model          LowCardinality(String),
    instance       LowCardinality(String),
    metric         LowCardinality(String),
    value_min      SimpleAggregateFunction(min, Float64),
    value_max      SimpleAggregateFunction(max, Float64),
    value_last     AggregateFunction(argMax, Float64, DateTime64(6, 'UTC'))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMMDD(minute)
ORDER BY (engine, model, instance, metric, minute)
TTL minute + INTERVAL ${ttl_days} DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS driftline.rollup_engine_1m_mv
TO driftline.rollup_engine_1m
AS SELECT
    toStartOfMinute(time) AS minute,
    engine,
    model,
    instance,
    metric,
    min(value) AS value_min,
    max(value) AS value_max,
    argMaxState(value, time) AS value_last
FROM driftline.engine_metrics
GROUP BY minute, engine, model, instance, metric;
