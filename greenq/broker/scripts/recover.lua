-- recover.lua: give a dead consumer's unacked messages back to its queue, or dead-letter them.
-- KEYS[1]     the band stream
-- KEYS[2]     the queue's dead-letter stream (greenq:{q:NAME}:dead)
-- KEYS[3]     the dead consumer's heartbeat key (checked here, atomically, to be missing)
-- KEYS[4]     the queue's dropped-dead-letters counter (what the cap dropped is counted)
-- KEYS[5]     the queue's recovery markers (greenq:{q:NAME}:recovered), a sorted set of
--             "<band stream>|<entry id>" scored by time in ms, read by start.lua
-- ARGV[1]     consumer group name
-- ARGV[2]     the dead consumer's name
-- ARGV[3]     max_deliveries: a message whose delivery number reached this is dead-lettered
-- ARGV[4]     dead-letter stream cap
-- ARGV[5]     time now, epoch ms, recorded on dead letters
-- ARGV[6]     batch size: most entries handled in this call
-- ARGV[7]     how long a recovery marker is kept, ms
-- ARGV[8]     min idle, ms (absent: 0): an entry delivered more recently is left alone for now.
--             Its consumer fetched it then, so it was alive; after a stall or a pause every
--             heartbeat lapses at once, and without this each worker recovered what the others
--             had just fetched, again and again, up to max_deliveries in a second.
-- Returns {requeued, {body of each dead-lettered message}, left: entries still to recover now}
-- (the caller writes their FAILURE results); the consumer is deleted once it has none left.
-- Several workers may run this at once: each entry is acked inside the script, so only
-- one of them moves it.
local stream, dead, heartbeat, markers = KEYS[1], KEYS[2], KEYS[3], KEYS[5]
local group, consumer = ARGV[1], ARGV[2]
local max_deliveries, cap = tonumber(ARGV[3]), ARGV[4]
if redis.call('EXISTS', heartbeat) == 1 then return {0, {}, -1} end
local min_idle = tonumber(ARGV[8] or '0')
local function pending_of(count)
  if min_idle > 0 then
    return redis.call('XPENDING', stream, group, 'IDLE', min_idle, '-', '+', count, consumer)
  end
  return redis.call('XPENDING', stream, group, '-', '+', count, consumer)
end
local pending = pending_of(tonumber(ARGV[6]))
if #pending > 0 then
  redis.call('ZREMRANGEBYSCORE', markers, '-inf', tonumber(ARGV[5]) - tonumber(ARGV[7]))
end
local requeued, dead_lettered = 0, {}
for _, item in ipairs(pending) do
  local id = item[1]
  local found = redis.call('XRANGE', stream, id, id)
  redis.call('XACK', stream, group, id)
  redis.call('XDEL', stream, id)
  -- a marker for start.lua: a worker presumed dead that retries its early ack must not run it
  redis.call('ZADD', markers, ARGV[5], stream .. '|' .. id)
  if found[1] then
    local fields = found[1][2]
    local body, deliveries = '', 1
    for i = 1, #fields, 2 do
      if fields[i] == 'm' then body = fields[i + 1]
      elseif fields[i] == 'd' then deliveries = tonumber(fields[i + 1]) end
    end
    if deliveries >= max_deliveries then
      redis.call('XADD', dead, '*', 'm', body, 'reason',
                 'delivery ' .. deliveries .. ' killed its worker', 'time', ARGV[5],
                 'worker', consumer, 'stream', stream)
      dead_lettered[#dead_lettered + 1] = body
    else
      redis.call('XADD', stream, '*', 'm', body, 'd', tostring(deliveries + 1))
      requeued = requeued + 1
    end
  end
end
if #dead_lettered > 0 then
  local dropped = redis.call('XTRIM', dead, 'MAXLEN', tonumber(cap))
  if dropped > 0 then redis.call('INCRBY', KEYS[4], dropped) end
end
local left = #pending_of(1)
if #redis.call('XPENDING', stream, group, '-', '+', 1, consumer) == 0 then
  redis.call('XGROUP', 'DELCONSUMER', stream, group, consumer)
end
return {requeued, dead_lettered, left}
