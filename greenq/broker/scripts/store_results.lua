-- store_results.lua: write the results of many tasks in one call, each to its own stream.
-- KEYS[1..n]  result keys (greenq:result:{ID}), one per task
-- ARGV[1]     time to live in milliseconds
-- ARGV[2..n+1] the JSON result payloads, in KEYS order
-- A result key is a stream trimmed to its newest entry: readers block on it with XREAD,
-- so a waiting get() is woken by the write itself, with no polling.
local ttl = ARGV[1]
for i, key in ipairs(KEYS) do
  redis.call('XADD', key, 'MAXLEN', '1', '*', 'r', ARGV[i + 1])
  redis.call('PEXPIRE', key, ttl)
end
return #KEYS
