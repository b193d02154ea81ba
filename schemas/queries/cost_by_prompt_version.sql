-- Cost by prompt version over [from, to).
-- Params: from, to (DateTime64(6), UTC). spend_usd sums priced requests; unpriced ones are
-- counted apart so a model missing from the price book shows up instead of looking free.
SELECT
    prompt_version,
    count() AS requests,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cost_usd) AS spend_usd,
    countIf(cost_usd IS NULL) AS unpriced_requests,
    round(spend_usd / sum(spend_usd) OVER (), 6) AS spend_share
FROM driftline.llm_requests
WHERE start_ts >= {from:DateTime64(6)} AND start_ts < {to:DateTime64(6)}
GROUP BY prompt_version
ORDER BY spend_usd DESC, prompt_version
