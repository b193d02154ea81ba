-- Prompt-cache savings by provider and model over [from, to): what the cached tokens would have
-- cost at the input rate minus what they cost. Cache reads save (input - cache_read rate);
-- cache writes usually cost more than input (negative saving). Rates come from
-- driftline.model_prices (base tier); a model without rates has NULL savings.
-- Params: from, to (DateTime64(6), UTC).
WITH usage AS
(
    SELECT provider, model,
           sum(cache_read_tokens) AS read_tokens,
           sum(cache_write_tokens) AS write_tokens,
           sum(cost_usd) AS spend_usd
    FROM driftline.llm_requests
    WHERE start_ts >= {from:DateTime64(6)} AND start_ts < {to:DateTime64(6)}
    GROUP BY provider, model
),
prices AS
(
    SELECT provider, model,
           argMax(input_per_mtok, updated_at) AS input_per_mtok,
           argMax(cache_read_per_mtok, updated_at) AS cache_read_per_mtok,
           argMax(cache_write_per_mtok, updated_at) AS cache_write_per_mtok
    FROM driftline.model_prices
    GROUP BY provider, model
)
SELECT
    u.provider AS provider,
    u.model AS model,
    u.read_tokens AS cache_read_tokens,
    u.write_tokens AS cache_write_tokens,
    u.spend_usd AS spend_usd,
    if(p.model = '', NULL,
       (u.read_tokens * (p.input_per_mtok - p.cache_read_per_mtok)
        - u.write_tokens * (p.cache_write_per_mtok - p.input_per_mtok)) / 1e6) AS savings_usd
FROM usage AS u
LEFT JOIN prices AS p ON u.provider = p.provider AND u.model = p.model
ORDER BY savings_usd DESC NULLS LAST, provider, model
