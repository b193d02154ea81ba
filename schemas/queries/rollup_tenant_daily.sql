-- Daily cost, requests and errors per tenant over [from, to), from the
-- per-minute tenant rollup (for chargeback).
-- Params: from, to (DateTime64(6), UTC); environments (Array(String)): the environments to
-- count, [] for all.
-- Default: environments = []
SELECT
    toDate(minute) AS day,
    tenant,
    sum(requests) AS requests,
    sum(errors) AS errors,
    sum(cost_usd) AS cost_usd
FROM driftline.rollup_tenant_1m
WHERE minute >= toStartOfMinute({from:DateTime64(6)}) AND minute < {to:DateTime64(6)}
  AND (empty({environments:Array(String)}) OR has({environments:Array(String)}, environment))
GROUP BY day, tenant
ORDER BY day, tenant
