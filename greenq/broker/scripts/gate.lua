-- gate.lua: flow control for messages one worker has just reserved from one queue, before they
-- take a place in its prefetch buffer (docs/flow-control.md). Over its limit, a message leaves
-- the stream here (XACK + XDEL) and waits outside it, so it holds no worker's place:
--   rate (GCRA, no burst): the message gets the next free slot of every bucket it belongs to;
--     a slot in the future sends it to the delayed set, due then, with its task id in `paid`,
--     so that it passes without taking another slot when it comes back;
--   concurrency: a full lease set parks it in the lease's list, until release.lua frees a lease
--     (a slot it held is given up: it takes a new one when it comes back).
-- KEYS[1..10]  the queue's band streams, highest priority first (greenq.broker.keys.Keys.bands)
-- KEYS[11]     the queue's delayed set
-- KEYS[12]     paid: task id -> the slot (ms) its deferred message holds
-- KEYS[13]     the set of lease names with parked messages
-- KEYS[14..]   rate buckets, lease sets and parked lists, referred to by index from ARGV
-- ARGV[1] consumer group, ARGV[2] lease TTL ms, ARGV[3] number of messages; then per message:
--   band (KEYS index), priority, entry id, task id, deliveries, number of buckets R,
--   R x (bucket KEYS index, interval ms), lease KEYS index (0: none), most leases,
--   parked list KEYS index, lease name
-- Returns one character per message: a admitted (a lease taken if it has one), d deferred,
-- p parked.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local group, ttl, count = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local delayed, paid, parked_names = KEYS[11], KEYS[12], KEYS[13]
local verdicts, swept, deferred = {}, {}, false

-- Take an entry this consumer holds out of its stream; returns its body (nil if it is gone).
local function take(stream, id)
  local found = redis.call('XRANGE', stream, id, id)
  redis.call('XACK', stream, group, id)
  redis.call('XDEL', stream, id)
  if found[1] == nil then return nil end
  local fields = found[1][2]
  for i = 1, #fields, 2 do
    if fields[i] == 'm' then return fields[i + 1] end
  end
  return nil
end

local a = 4
for m = 1, count do
  local band, priority, id, task_id, deliveries = tonumber(ARGV[a]), ARGV[a + 1], ARGV[a + 2],
    ARGV[a + 3], ARGV[a + 4]
  local rates, first_rate = tonumber(ARGV[a + 5]), a + 6
  a = first_rate + 2 * rates
  local lease_at, most, parked_at, lease_name = tonumber(ARGV[a]), tonumber(ARGV[a + 1]),
    tonumber(ARGV[a + 2]), ARGV[a + 3]
  a = a + 4
  local stream, verdict, holds = KEYS[band], 'a', false
  local lease = nil
  if lease_at > 0 then
    lease = KEYS[lease_at]
    if not swept[lease] then  -- leases of dead workers ran out: they are free again
      redis.call('ZREMRANGEBYSCORE', lease, '-inf', now)
      swept[lease] = true
    end
    holds = redis.call('ZSCORE', lease, task_id) ~= false  -- given back to it by release.lua
    if not holds and redis.call('ZCARD', lease) >= most then
      local body = take(stream, id)
      if body then
        redis.call('RPUSH', KEYS[parked_at], task_id .. '|' .. band .. '|' .. deliveries .. '|' .. body)
        redis.call('SADD', parked_names, lease_name)
      end
      -- A rate slot it held is lost: run whenever a lease frees, it would crowd the next slots
      -- (a server counting requests per second sees the two close together).
      if rates > 0 then redis.call('ZREM', paid, task_id) end
      verdict = 'p'
    end
  end
  if verdict == 'a' and rates > 0 then
    if redis.call('ZSCORE', paid, task_id) then
      redis.call('ZREM', paid, task_id)  -- its slot was taken when it was deferred
    else
      local slot = now
      for r = 0, rates - 1 do
        local tat = tonumber(redis.call('GET', KEYS[tonumber(ARGV[first_rate + 2 * r])]) or '0')
        if tat > slot then slot = tat end
      end
      for r = 0, rates - 1 do
        local bucket = KEYS[tonumber(ARGV[first_rate + 2 * r])]
        local after = slot + tonumber(ARGV[first_rate + 2 * r + 1])
        redis.call('SET', bucket, string.format('%.3f', after), 'PX', math.ceil(after - now) + 60000)
      end
      if slot > now then
        local body = take(stream, id)
        if body then
          redis.call('ZADD', delayed, math.ceil(slot), priority .. '|' .. body)
          redis.call('ZADD', paid, slot, task_id)
          deferred = true
        end
        if holds then redis.call('ZREM', lease, task_id) end
        verdict = 'd'
      end
    end
  end
  if verdict == 'a' and lease then
    redis.call('ZADD', lease, now + ttl, task_id)
  end
  verdicts[m] = verdict
end
if deferred then  -- slots of messages that never came back (purged, forgotten)
  redis.call('ZREMRANGEBYSCORE', paid, '-inf', now - 86400000)
end
return table.concat(verdicts)
