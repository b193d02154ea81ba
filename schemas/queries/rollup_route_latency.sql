-- Latency and TTFT percentiles and error rate per workflow and route over [from, to), from the
-- per-minute route rollup.
-- Params: from, to (DateTime64(6), UTC); environments (Array(String)): the environments to
-- count, [] for all.
-- Default: environments = []
SELECT
    workflow,
    route,
    sum(requests) AS requests,
    sum(errors) / requests AS error_rate,
    quantilesTDigestMerge(0.5, 0.95, 0.99)(latency_ms_q) AS latency_ms_p50_p95_p99,
    quantilesTDigestMerge(0.5, 0.95, 0.99)(ttft_ms_q) AS ttft_ms_p50_p95_p99
FROM driftline.rollup_route_1m
WHERE minute >= toStartOfMinute({from:DateTime64(6)}) AND minute < {to:DateTime64(6)}
  AND (empty({environments:Array(String)}) OR has({environments:Array(String)}, environment))
GROUP BY workflow, route
ORDER BY workflow, route
