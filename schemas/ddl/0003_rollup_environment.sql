-- driftline schema, version 3: the per-minute rollups get an `environment` key.
--
-- Why new tables and not ALTER TABLE ... ADD COLUMN environment, MODIFY ORDER BY: a rollup row
-- already mixes the requests of every environment in its minute, and an AggregatingMergeTree
-- cannot split a sum or a t-digest state back into its parts. An added column would give the
-- existing rows environment = '' (wrong for every filter), and MODIFY ORDER BY may only append
-- a column added in the same ALTER, leaving environment behind `minute` in the key. So each
-- rollup is rebuilt:
--   1. its materialized view is dropped (the old table stops growing);
--   2. a new table with `environment` in the key is filled from the raw rows
--      (INSERT ... SELECT, grouped exactly as the view groups an insert);
--   3. the old table is dropped and the new one takes its name; the view is created again,
--      now writing `environment` too.
-- Exactness: the backfill reads llm_requests_raw with FINAL (per partition, as the views of
-- 0001 do), so a span stored twice by racing writers is counted once; every later row reaches
-- the rollup through the view, behind the sink's duplicate filter (0001, "Exactness under
-- re-delivery"). Sums and counts equal those of a store that had these rollups from the start;
-- latency and TTFT percentiles are t-digests of the same values, equal up to the digest's
-- approximation. Rows already past the TTL are gone from the raw table and are not rebuilt.
-- Idempotent: every step can run again after an interruption (the `_next` table is emptied
-- before it is filled). Run it with the writers stopped: rows inserted between steps 1 and 3
-- by another process would miss the rollups (an embedded store cannot have another writer;
-- on a server, stop the workers while `driftline` upgrades the schema).

-- rollup_workflow_1m: key (workflow, environment, minute)
DROP VIEW IF EXISTS driftline.rollup_workflow_1m_mv SYNC;

CREATE TABLE IF NOT EXISTS driftline.rollup_workflow_1m_next
(
    minute             DateTime('UTC'),
    workflow           LowCardinality(String),
    environment        LowCardinality(String),
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
ORDER BY (workflow, environment, minute)
TTL minute + INTERVAL ${ttl_days} DAY;

TRUNCATE TABLE driftline.rollup_workflow_1m_next SYNC;

INSERT INTO driftline.rollup_workflow_1m_next
SELECT
    toStartOfMinute(r.start_ts) AS minute,
    r.workflow AS workflow,
    r.environment AS environment,
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
FROM driftline.llm_requests_raw AS r FINAL
GROUP BY minute, workflow, environment
SETTINGS do_not_merge_across_partitions_select_final = 1;

DROP TABLE IF EXISTS driftline.rollup_workflow_1m SYNC;

RENAME TABLE driftline.rollup_workflow_1m_next TO driftline.rollup_workflow_1m;

CREATE MATERIALIZED VIEW IF NOT EXISTS driftline.rollup_workflow_1m_mv
TO driftline.rollup_workflow_1m
AS SELECT
    toStartOfMinute(r.start_ts) AS minute,
    r.workflow AS workflow,
    r.environment AS environment,
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
GROUP BY minute, workflow, environment;

-- rollup_model_1m: key (workflow, model, environment, minute)
DROP VIEW IF EXISTS driftline.rollup_model_1m_mv SYNC;

CREATE TABLE IF NOT EXISTS driftline.rollup_model_1m_next
(
    minute             DateTime('UTC'),
    workflow           LowCardinality(String),
    model              LowCardinality(String),
    environment        LowCardinality(String),
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
ORDER BY (workflow, model, environment, minute)
TTL minute + INTERVAL ${ttl_days} DAY;

TRUNCATE TABLE driftline.rollup_model_1m_next SYNC;

INSERT INTO driftline.rollup_model_1m_next
SELECT
    toStartOfMinute(r.start_ts) AS minute,
    r.workflow AS workflow,
    if(r.response_model != '', r.response_model, r.request_model) AS model,
    r.environment AS environment,
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
FROM driftline.llm_requests_raw AS r FINAL
GROUP BY minute, workflow, model, environment
SETTINGS do_not_merge_across_partitions_select_final = 1;

DROP TABLE IF EXISTS driftline.rollup_model_1m SYNC;

RENAME TABLE driftline.rollup_model_1m_next TO driftline.rollup_model_1m;

CREATE MATERIALIZED VIEW IF NOT EXISTS driftline.rollup_model_1m_mv
TO driftline.rollup_model_1m
AS SELECT
    toStartOfMinute(r.start_ts) AS minute,
    r.workflow AS workflow,
    if(r.response_model != '', r.response_model, r.request_model) AS model,
    r.environment AS environment,
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
GROUP BY minute, workflow, model, environment;

-- rollup_route_1m: key (workflow, route, environment, minute)
DROP VIEW IF EXISTS driftline.rollup_route_1m_mv SYNC;

CREATE TABLE IF NOT EXISTS driftline.rollup_route_1m_next
(
    minute             DateTime('UTC'),
    workflow           LowCardinality(String),
    route              LowCardinality(String),
    environment        LowCardinality(String),
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
ORDER BY (workflow, route, environment, minute)
TTL minute + INTERVAL ${ttl_days} DAY;

TRUNCATE TABLE driftline.rollup_route_1m_next SYNC;

INSERT INTO driftline.rollup_route_1m_next
SELECT
    toStartOfMinute(r.start_ts) AS minute,
    r.workflow AS workflow,
    r.route AS route,
    r.environment AS environment,
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
FROM driftline.llm_requests_raw AS r FINAL
GROUP BY minute, workflow, route, environment
SETTINGS do_not_merge_across_partitions_select_final = 1;

DROP TABLE IF EXISTS driftline.rollup_route_1m SYNC;

RENAME TABLE driftline.rollup_route_1m_next TO driftline.rollup_route_1m;

CREATE MATERIALIZED VIEW IF NOT EXISTS driftline.rollup_route_1m_mv
TO driftline.rollup_route_1m
AS SELECT
    toStartOfMinute(r.start_ts) AS minute,
    r.workflow AS workflow,
    r.route AS route,
    r.environment AS environment,
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
GROUP BY minute, workflow, route, environment;

-- rollup_tenant_1m: key (tenant, workflow, environment, minute)
DROP VIEW IF EXISTS driftline.rollup_tenant_1m_mv SYNC;

CREATE TABLE IF NOT EXISTS driftline.rollup_tenant_1m_next
(
    minute             DateTime('UTC'),
    tenant             LowCardinality(String),
    workflow           LowCardinality(String),
    environment        LowCardinality(String),
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
ORDER BY (tenant, workflow, environment, minute)
TTL minute + INTERVAL ${ttl_days} DAY;

TRUNCATE TABLE driftline.rollup_tenant_1m_next SYNC;

INSERT INTO driftline.rollup_tenant_1m_next
SELECT
    toStartOfMinute(r.start_ts) AS minute,
    r.tenant AS tenant,
    r.workflow AS workflow,
    r.environment AS environment,
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
FROM driftline.llm_requests_raw AS r FINAL
GROUP BY minute, tenant, workflow, environment
SETTINGS do_not_merge_across_partitions_select_final = 1;

DROP TABLE IF EXISTS driftline.rollup_tenant_1m SYNC;

RENAME TABLE driftline.rollup_tenant_1m_next TO driftline.rollup_tenant_1m;

CREATE MATERIALIZED VIEW IF NOT EXISTS driftline.rollup_tenant_1m_mv
TO driftline.rollup_tenant_1m
AS SELECT
    toStartOfMinute(r.start_ts) AS minute,
    r.tenant AS tenant,
    r.workflow AS workflow,
    r.environment AS environment,
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
GROUP BY minute, tenant, workflow, environment;
