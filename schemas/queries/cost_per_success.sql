-- Cost per successful request by workflow over [from, to). A request succeeded when its status
-- is not 'error' and its output passed validation; failed requests still cost money, so their
-- spend is included in the numerator: this is what one good answer really costs.
-- Params: from, to (DateTime64(6), UTC).
SELECT
    workflow,
    count() AS requests,
    countIf(status != 'error' AND NOT validation_failed) AS successes,
    sum(cost_usd) AS spend_usd,
    sumIf(cost_usd, status = 'error' OR validation_failed) AS failed_cost_usd,
    if(successes = 0, NULL, spend_usd / successes) AS cost_per_success_usd
FROM driftline.llm_requests
WHERE start_ts >= {from:DateTime64(6)} AND start_ts < {to:DateTime64(6)}
GROUP BY workflow
ORDER BY workflow
