-- Per-minute traffic, cost and latency percentiles of each workflow over [from, to), from the
-- rollup the dashboards read (exact counts and sums; t-digest latency percentiles). `time` is a
-- DateTime64 so that Arrow clients get a timestamp, not seconds.
-- Params: from, to (DateTime64(6), UTC); environments (Array(String)): the environments to
-- count, [] for all.
-- Default: environments = []
SELECT
    toDateTime64(minute, 0, 'UTC') AS time,
    workflow,
    sum(requests) AS requests,
    sum(errors) AS errors,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cost_usd) AS cost_usd,
    quantilesTDigestMerge(0.5, 0.95, 0.99)(latency_ms_q) AS latency_ms_p50_p95_p99
FROM driftline.rollup_workflow_1m
WHERE minute >= toStartOfMinute({from:DateTime64(6)}) AND minute < {to:DateTime64(6)}
  AND (empty({environments:Array(String)}) OR has({environments:Array(String)}, environment))
GROUP BY time, workflow
ORDER BY time, workflow
