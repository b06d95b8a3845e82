-- store_results.lua: write the results of many tasks in one call, each to its own stream.
-- KEYS[1..n]  result keys (greenq:result:{ID}), one per task
-- ARGV[1]     time to live in milliseconds
-- ARGV[2..n+1] the JSON result payloads, in KEYS order
-- A result key is a stream of the task's state records (STARTED, RETRY, update_state progress,
-- the final one; usually just the final one), trimmed to about 1,000: readers block on it with
-- XREAD, so a waiting get() is woken by the write itself, with no polling, and a progress reader
-- that is a little behind still sees every update. Approximate trimming costs nothing here.
local ttl = ARGV[1]
for i, key in ipairs(KEYS) do
  redis.call('XADD', key, 'MAXLEN', '~', '1000', '*', 'r', ARGV[i + 1])
  redis.call('PEXPIRE', key, ttl)
end
return #KEYS
