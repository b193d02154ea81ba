-- Budget burn per workflow over [from, to): spend against the share of the monthly (30-day)
-- budget that the window represents. burn_rate 1 spends the budget exactly in 30 days; 14.4
-- over one hour would spend 2% of it in that hour (the fast-burn paging threshold).
-- Params: from, to (DateTime64(6), UTC); budgets (Map(String, Float64): workflow -> monthly USD,
-- from workflows.<name>.budgets.monthly_cost_usd). Workflows without a budget get NULL rates.
SELECT
    workflow,
    sum(cost_usd) AS spend_usd,
    if(mapContains({budgets:Map(String, Float64)}, workflow),
       {budgets:Map(String, Float64)}[workflow], NULL) AS monthly_budget_usd,
    monthly_budget_usd * dateDiff('microsecond', {from:DateTime64(6)}, {to:DateTime64(6)})
        / (30 * 86400 * 1e6) AS window_budget_usd,
    spend_usd / window_budget_usd AS burn_rate,
    spend_usd / monthly_budget_usd AS month_fraction_spent
FROM driftline.llm_requests
WHERE start_ts >= {from:DateTime64(6)} AND start_ts < {to:DateTime64(6)}
GROUP BY workflow
ORDER BY burn_rate DESC NULLS LAST, workflow
