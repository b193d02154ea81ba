-- Cost and requests by workflow for the 7 days before `at` against the 7 days before that.
-- Spend counts priced requests (0 when none); change_pct is NULL when the earlier week had no
-- spend.
-- Params: at (DateTime64(6), UTC): the end of the current week.
SELECT
    workflow,
    ifNull(sumIf(cost_usd, start_ts >= {at:DateTime64(6)} - INTERVAL 7 DAY), 0) AS this_week_usd,
    ifNull(sumIf(cost_usd, start_ts < {at:DateTime64(6)} - INTERVAL 7 DAY), 0) AS last_week_usd,
    countIf(start_ts >= {at:DateTime64(6)} - INTERVAL 7 DAY) AS this_week_requests,
    countIf(start_ts < {at:DateTime64(6)} - INTERVAL 7 DAY) AS last_week_requests,
    if(last_week_usd = 0, NULL, round(100 * (this_week_usd - last_week_usd) / last_week_usd, 2))
        AS change_pct
FROM driftline.llm_requests
WHERE start_ts >= {at:DateTime64(6)} - INTERVAL 14 DAY AND start_ts < {at:DateTime64(6)}
GROUP BY workflow
ORDER BY workflow
