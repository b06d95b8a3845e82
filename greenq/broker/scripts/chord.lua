-- chord.lua: count finished members of one chord and enqueue its body exactly once.
-- KEYS[1]  the chord's state hash (Keys.chord): n, body, delay, p, r<i>, done, f, fired
-- KEYS[2]  the body's band stream;  KEYS[3]  the body queue's delayed set (same hash tag)
-- ARGV[1]  time to live of the state in milliseconds
-- ARGV[2..] triples: member index, its result as JSON, its failure as JSON ('' if it succeeded)
-- A member is counted once whatever happens (HSETNX on its index): a retried member, a member
-- run again after its worker died, or a duplicate delivery cannot count twice. The body is
-- enqueued when the last member is counted, or at the first failure (the body's worker then
-- records the chord's FAILURE instead of running it); HSETNX on "fired" makes that once.
-- Returns 1 if this call enqueued the body, 0 if not, -1 if the state is gone (expired).
local key = KEYS[1]
local n = tonumber(redis.call('HGET', key, 'n'))
if not n then
  return -1
end
local fire = false
for i = 2, #ARGV, 3 do
  if redis.call('HSETNX', key, 'r' .. ARGV[i], ARGV[i + 1]) == 1 then
    if redis.call('HINCRBY', key, 'done', 1) >= n then
      fire = true
    end
    if ARGV[i + 2] ~= '' and redis.call('HSETNX', key, 'f', ARGV[i + 2]) == 1 then
      fire = true
    end
  end
end
redis.call('PEXPIRE', key, ARGV[1])
if not fire or redis.call('HSETNX', key, 'fired', '1') == 0 then
  return 0
end
local body = redis.call('HGET', key, 'body')
local delay = tonumber(redis.call('HGET', key, 'delay') or '0') or 0
if delay > 0 then
  local t = redis.call('TIME')
  local due = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + delay
  redis.call('ZADD', KEYS[3], due, (redis.call('HGET', key, 'p') or '0') .. '|' .. body)
else
  redis.call('XADD', KEYS[2], '*', 'm', body)
end
return 1
