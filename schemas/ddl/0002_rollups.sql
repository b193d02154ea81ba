-- driftline schema, version 2: per-minute rollups for dashboards.
--
-- One AggregatingMergeTree per dimension (workflow, model, route, tenant), each fed by a
-- materialized view on llm_requests_raw. A materialized view sees exactly the rows of each
-- insert, so the rollups are exact because duplicates never get inserted: the sink filters
-- spans already stored (see 0001_init.sql, "Exactness under re-delivery"). Counters are
-- SimpleAggregateFunction(sum) (read them with sum()); latency percentiles are t-digest states
-- (read them with quantilesTDigestMerge(0.5, 0.95, 0.99)(latency_ms_q)). Read rollups with
-- GROUP BY on the key: rows for one key are merged in the background, not at insert.
-- Source columns are qualified (r.x) because the aggregates reuse their names as aliases.

CREATE TABLE IF NOT EXISTS driftline.rollup_workflow_1m
(
    minute             DateTime('UTC'),
    workflow           LowCardinality(String),
    requests           SimpleAggregateFunction(sum, UInt64),
    errors             SimpleAggregateFunction(sum, UInt64),
    validation_failures SimpleAggregateFunction(sum, UInt64),
    retries            SimpleAggregateFunction(sum, UInt64),
    input_tokens       SimpleAggregateFunction(sum, UInt64),
    output_tokens      SimpleAggregateFunction(sum, UInt64),
    cache_read_tokens  SimpleAggregateFunction(sum, UInt64),
    cache_write_tokens SimpleAggregateFunction(sum, UInt64),
    reasoning_tokens   SimpleAggregateFunction(sum, UInt64),
    cost_usd           SimpleAggregateFunction(sum, Float64),
    unpriced           SimpleAggregateFunction(sum, UInt64),
    latency_ms_q       AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), Float64),
    ttft_ms_q          AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), Float64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMMDD(minute)
ORDER BY (workflow, minute)
TTL minute + INTERVAL ${ttl_days} DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS driftline.rollup_workflow_1m_mv
TO driftline.rollup_workflow_1m
AS SELECT
    toStartOfMinute(r.start_ts) AS minute,
    r.workflow AS workflow,
    toUInt64(count()) AS requests,
    toUInt64(countIf(r.status = 'error')) AS errors,
    toUInt64(countIf(r.validation_failed)) AS validation_failures,
    toUInt64(sum(r.retry_attempt)) AS retries,
    sum(r.input_tokens) AS input_tokens,
    sum(r.output_tokens) AS output_tokens,
    sum(r.cache_read_tokens) AS cache_read_tokens,
    sum(r.cache_write_tokens) AS cache_write_tokens,
    sum(r.reasoning_tokens) AS reasoning_tokens,
    sum(ifNull(r.cost_usd, 0)) AS cost_usd,
    toUInt64(countIf(r.cost_usd IS NULL)) AS unpriced,
    quantilesTDigestState(0.5, 0.95, 0.99)(r.latency_ms) AS latency_ms_q,
    quantilesTDigestStateIf(0.5, 0.95, 0.99)(ifNull(r.ttft_ms, 0), r.ttft_ms IS NOT NULL) AS ttft_ms_q
FROM driftline.llm_requests_raw AS r
GROUP BY minute, workflow;

CREATE TABLE IF NOT EXISTS driftline.rollup_model_1m
(
    minute             DateTime('UTC'),
    workflow           LowCardinality(String),
    model              LowCardinality(String),
    requests           SimpleAggregateFunction(sum, UInt64),
    errors             SimpleAggregateFunction(sum, UInt64),
    validation_failures SimpleAggregateFunction(sum, UInt64),
    retries            SimpleAggregateFunction(sum, UInt64),
    input_tokens       SimpleAggregateFunction(sum, UInt64),
    output_tokens      SimpleAggregateFunction(sum, UInt64),
    cache_read_tokens  SimpleAggregateFunction(sum, UInt64),
    cache_write_tokens SimpleAggregateFunction(sum, UInt64),
    reasoning_tokens   SimpleAggregateFunction(sum, UInt64),
    cost_usd           SimpleAggregateFunction(sum, Float64),
    unpriced           SimpleAggregateFunction(sum, UInt64),
    latency_ms_q       AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), Float64),
    ttft_ms_q          AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), Float64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMMDD(minute)
ORDER BY (workflow, model, minute)
TTL minute + INTERVAL ${ttl_days} DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS driftline.rollup_model_1m_mv
TO driftline.rollup_model_1m
AS SELECT
    toStartOfMinute(r.start_ts) AS minute,
    r.workflow AS workflow,
    if(r.response_model != '', r.response_model, r.request_model) AS model,
    toUInt64(count()) AS requests,
    toUInt64(countIf(r.status = 'error')) AS errors,
    toUInt64(countIf(r.validation_failed)) AS validation_failures,
    toUInt64(sum(r.retry_attempt)) AS retries,
    sum(r.input_tokens) AS input_tokens,
    sum(r.output_tokens) AS output_tokens,
    sum(r.cache_read_tokens) AS cache_read_tokens,
    sum(r.cache_write_tokens) AS cache_write_tokens,
    sum(r.reasoning_tokens) AS reasoning_tokens,
    sum(ifNull(r.cost_usd, 0)) AS cost_usd,
    toUInt64(countIf(r.cost_usd IS NULL)) AS unpriced,
    quantilesTDigestState(0.5, 0.95, 0.99)(r.latency_ms) AS latency_ms_q,
    quantilesTDigestStateIf(0.5, 0.95, 0.99)(ifNull(r.ttft_ms, 0), r.ttft_ms IS NOT NULL) AS ttft_ms_q
FROM driftline.llm_requests_raw AS r
GROUP BY minute, workflow, model;

CREATE TABLE IF NOT EXISTS driftline.rollup_route_1m
(
    minute             DateTime('UTC'),
    workflow           LowCardinality(String),
    route              LowCardinality(String),
    requests           SimpleAggregateFunction(sum, UInt64),
    errors             SimpleAggregateFunction(sum, UInt64),
    validation_failures SimpleAggregateFunction(sum, UInt64),
    retries            SimpleAggregateFunction(sum, UInt64),
    input_tokens       SimpleAggregateFunction(sum, UInt64),
    output_tokens      SimpleAggregateFunction(sum, UInt64),
    cache_read_tokens  SimpleAggregateFunction(sum, UInt64),
    cache_write_tokens SimpleAggregateFunction(sum, UInt64),
    reasoning_tokens   SimpleAggregateFunction(sum, UInt64),
    cost_usd           SimpleAggregateFunction(sum, Float64),
    unpriced           SimpleAggregateFunction(sum, UInt64),
    latency_ms_q       AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), Float64),
    ttft_ms_q          AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), Float64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMMDD(minute)
ORDER BY (workflow, route, minute)
TTL minute + INTERVAL ${ttl_days} DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS driftline.rollup_route_1m_mv
TO driftline.rollup_route_1m
AS SELECT
    toStartOfMinute(r.start_ts) AS minute,
    r.workflow AS workflow,
    r.route AS route,
    toUInt64(count()) AS requests,
    toUInt64(countIf(r.status = 'error')) AS errors,
    toUInt64(countIf(r.validation_failed)) AS validation_failures,
    toUInt64(sum(r.retry_attempt)) AS retries,
    sum(r.input_tokens) AS input_tokens,
    sum(r.output_tokens) AS output_tokens,
    sum(r.cache_read_tokens) AS cache_read_tokens,
    sum(r.cache_write_tokens) AS cache_write_tokens,
    sum(r.reasoning_tokens) AS reasoning_tokens,
    sum(ifNull(r.cost_usd, 0)) AS cost_usd,
    toUInt64(countIf(r.cost_usd IS NULL)) AS unpriced,
    quantilesTDigestState(0.5, 0.95, 0.99)(r.latency_ms) AS latency_ms_q,
    quantilesTDigestStateIf(0.5, 0.95, 0.99)(ifNull(r.ttft_ms, 0), r.ttft_ms IS NOT NULL) AS ttft_ms_q
FROM driftline.llm_requests_raw AS r
GROUP BY minute, workflow, route;

CREATE TABLE IF NOT EXISTS driftline.rollup_tenant_1m
(
    minute             DateTime('UTC'),
    tenant             LowCardinality(String),
    workflow           LowCardinality(String),
    requests           SimpleAggregateFunction(sum, UInt64),
    errors             SimpleAggregateFunction(sum, UInt64),
    validation_failures SimpleAggregateFunction(sum, UInt64),
    retries            SimpleAggregateFunction(sum, UInt64),
    input_tokens       SimpleAggregateFunction(sum, UInt64),
    output_tokens      SimpleAggregateFunction(sum, UInt64),
    cache_read_tokens  SimpleAggregateFunction(sum, UInt64),
    cache_write_tokens SimpleAggregateFunction(sum, UInt64),
    reasoning_tokens   SimpleAggregateFunction(sum, UInt64),
    cost_usd           SimpleAggregateFunction(sum, Float64),
    unpriced           SimpleAggregateFunction(sum, UInt64),
    latency_ms_q       AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), Float64),
    ttft_ms_q          AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), Float64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMMDD(minute)
ORDER BY (tenant, workflow, minute)
TTL minute + INTERVAL ${ttl_days} DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS driftline.rollup_tenant_1m_mv
TO driftline.rollup_tenant_1m
AS SELECT
    toStartOfMinute(r.start_ts) AS minute,
    r.tenant AS tenant,
    r.workflow AS workflow,
    toUInt64(count()) AS requests,
    toUInt64(countIf(r.status = 'error')) AS errors,
    toUInt64(countIf(r.validation_failed)) AS validation_failures,
    toUInt64(sum(r.retry_attempt)) AS retries,
    sum(r.input_tokens) AS input_tokens,
    sum(r.output_tokens) AS output_tokens,
    sum(r.cache_read_tokens) AS cache_read_tokens,
    sum(r.cache_write_tokens) AS cache_write_tokens,
    sum(r.reasoning_tokens) AS reasoning_tokens,
    sum(ifNull(r.cost_usd, 0)) AS cost_usd,
    toUInt64(countIf(r.cost_usd IS NULL)) AS unpriced,
    quantilesTDigestState(0.5, 0.95, 0.99)(r.latency_ms) AS latency_ms_q,
    quantilesTDigestStateIf(0.5, 0.95, 0.99)(ifNull(r.ttft_ms, 0), r.ttft_ms IS NOT NULL) AS ttft_ms_q
FROM driftline.llm_requests_raw AS r
GROUP BY minute, tenant, workflow;
