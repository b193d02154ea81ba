-- Traces started in [from, to) whose total tokens were the largest multiple of their first
-- call's tokens (agent loops, retries, fan-out).
-- Params: from, to (DateTime64(6), UTC); limit (UInt32).
SELECT
    trace_id, workflow, tenant, route, start_ts, llm_call_count, max_loop_depth,
    total_tokens, cost_usd, amplification
FROM driftline.llm_traces
WHERE start_ts >= {from:DateTime64(6)} AND start_ts < {to:DateTime64(6)}
  AND amplification IS NOT NULL
ORDER BY amplification DESC, trace_id
LIMIT {limit:UInt32}
