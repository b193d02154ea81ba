-- The most expensive traces started in [from, to).
-- Params: from, to (DateTime64(6), UTC); limit (UInt32).
SELECT
    trace_id, workflow, tenant, route, start_ts, llm_call_count, max_loop_depth,
    total_tokens, cost_usd, amplification
FROM driftline.llm_traces
WHERE start_ts >= {from:DateTime64(6)} AND start_ts < {to:DateTime64(6)}
ORDER BY cost_usd DESC NULLS LAST, trace_id
LIMIT {limit:UInt32}
