-- release.lua: one worker's lease upkeep on one queue (docs/flow-control.md): give back the
-- leases of its tasks that finished, extend those of its tasks still running, drop leases that
-- ran out (their worker died), and move parked messages back to their streams, one per free
-- lease, each with its lease already taken (so that gate.lua lets it through).
-- KEYS[1..10]  the queue's band streams, highest priority first (as in gate.lua)
-- KEYS[11]     the set of lease names with parked messages
-- KEYS[10 + 2i], KEYS[11 + 2i]  the lease set and the parked list of lease name i
-- ARGV[1] lease TTL ms, ARGV[2] number of lease names N; then per name: the name, most leases,
--   number of task ids to release K, K ids, number of task ids to extend E, E ids
-- Returns how many parked messages went back to their streams.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl, names = tonumber(ARGV[1]), tonumber(ARGV[2])
local moved, a = 0, 3
for i = 1, names do
  local lease, parked = KEYS[10 + 2 * i], KEYS[11 + 2 * i]
  local name, most, released = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  for j = 1, released do redis.call('ZREM', lease, ARGV[a + 2 + j]) end
  a = a + 3 + released
  local extended = tonumber(ARGV[a])
  for j = 1, extended do redis.call('ZADD', lease, 'XX', now + ttl, ARGV[a + j]) end
  a = a + 1 + extended
  redis.call('ZREMRANGEBYSCORE', lease, '-inf', now)
  local free = most - redis.call('ZCARD', lease)
  while free > 0 do
    local item = redis.call('LPOP', parked)
    if not item then break end
    local p1 = string.find(item, '|', 1, true)
    local p2 = string.find(item, '|', p1 + 1, true)
    local p3 = string.find(item, '|', p2 + 1, true)
    local task_id = string.sub(item, 1, p1 - 1)
    local band = tonumber(string.sub(item, p1 + 1, p2 - 1))
    redis.call('XADD', KEYS[band], '*', 'm', string.sub(item, p3 + 1), 'd', string.sub(item, p2 + 1, p3 - 1))
    redis.call('ZADD', lease, now + ttl, task_id)
    free = free - 1
    moved = moved + 1
  end
  if redis.call('LLEN', parked) == 0 then redis.call('SREM', KEYS[11], name) end
end
return moved
