-- Hourly cost and tokens by model over [from, to), from the per-minute model rollup.
-- Params: from, to (DateTime64(6), UTC); environments (Array(String)): the environments to
-- count, [] for all.
-- Default: environments = []
SELECT
    toDateTime64(toStartOfHour(minute), 0, 'UTC') AS hour,
    model,
    sum(requests) AS requests,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cache_read_tokens) AS cache_read_tokens,
    sum(cost_usd) AS cost_usd
FROM driftline.rollup_model_1m
WHERE minute >= toStartOfMinute({from:DateTime64(6)}) AND minute < {to:DateTime64(6)}
  AND (empty({environments:Array(String)}) OR has({environments:Array(String)}, environment))
GROUP BY hour, model
ORDER BY hour, model
