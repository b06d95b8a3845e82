-- schedule.lua: move due delayed messages (ETA, countdown, retry) into their band stream.
-- KEYS[1]     the queue's delayed sorted set (greenq:{q:NAME}:delayed), score = due time in ms
-- KEYS[2..11] the queue's band streams for priorities 0..9
-- ARGV[1]     most messages to move in this call
-- Members are "<priority>|<message body>". Due time is judged by the Redis server's clock,
-- so every worker agrees; ZREM inside the same script means two workers never both move one.
-- Returns {moved, next due time in ms or -1, server time in ms}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, member in ipairs(due) do
  local bar = string.find(member, '|', 1, true)
  local priority = tonumber(string.sub(member, 1, bar - 1))
  redis.call('XADD', KEYS[2 + priority], '*', 'm', string.sub(member, bar + 1))
  redis.call('ZREM', KEYS[1], member)
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local next_due = -1
if nxt[2] then next_due = tonumber(nxt[2]) end
return {#due, next_due, now}
