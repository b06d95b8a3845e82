-- nack.lua: a message whose task was lost with its process (prefork child died) goes back to
-- its stream with its delivery count raised, or to the dead-letter stream at max_deliveries.
-- KEYS[1]     the band stream
-- KEYS[2]     the queue's dead-letter stream
-- KEYS[3]     the queue's dropped-dead-letters counter
-- ARGV[1]     consumer group name
-- ARGV[2]     max_deliveries
-- ARGV[3]     dead-letter stream cap
-- ARGV[4]     time now, epoch ms
-- ARGV[5]     consumer name (recorded on dead letters)
-- ARGV[6..]   entry ids
-- Returns {requeued, {body of each dead-lettered message}} (the caller writes their FAILURE
-- results). Each entry is acked in the same step, so it moves once.
local stream, dead = KEYS[1], KEYS[2]
local group, max_deliveries = ARGV[1], tonumber(ARGV[2])
local requeued, dead_lettered = 0, {}
for i = 6, #ARGV do
  local id = ARGV[i]
  local found = redis.call('XRANGE', stream, id, id)
  if found[1] and redis.call('XACK', stream, group, id) == 1 then
    local fields = found[1][2]
    local body, deliveries = '', 1
    for j = 1, #fields, 2 do
      if fields[j] == 'm' then body = fields[j + 1]
      elseif fields[j] == 'd' then deliveries = tonumber(fields[j + 1]) end
    end
    if deliveries >= max_deliveries then
      redis.call('XADD', dead, '*', 'm', body, 'reason',
                 'delivery ' .. deliveries .. ' killed its worker', 'time', ARGV[4],
                 'worker', ARGV[5], 'stream', stream)
      dead_lettered[#dead_lettered + 1] = body
    else
      redis.call('XADD', stream, '*', 'm', body, 'd', tostring(deliveries + 1))
      requeued = requeued + 1
    end
  end
  redis.call('XDEL', stream, id)
end
if #dead_lettered > 0 then
  local dropped = redis.call('XTRIM', dead, 'MAXLEN', tonumber(ARGV[3]))
  if dropped > 0 then redis.call('INCRBY', KEYS[3], dropped) end
end
return {requeued, dead_lettered}
