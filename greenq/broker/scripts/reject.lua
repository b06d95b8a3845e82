-- reject.lua: dead-letter a message that cannot run, only if this consumer still holds it.
-- KEYS[1]     the band stream it was read from
-- KEYS[2]     the queue's dead-letter stream (greenq:{q:NAME}:dead)
-- KEYS[3]     the queue's dropped-dead-letters counter
-- ARGV[1]     consumer group name
-- ARGV[2]     the message's entry id
-- ARGV[3]     the dead-letter stream cap (dead_letter_max)
-- ARGV[4..]   field/value pairs of the dead letter (m, reason, time, worker, stream)
-- Returns 1 if dead-lettered, 0 if this consumer no longer held the message: recovery gave it
-- to another worker while this one was presumed dead, and that one dead-letters it.
local held = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if held == 0 then
  return 0
end
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 4))
local dropped = redis.call('XTRIM', KEYS[2], 'MAXLEN', tonumber(ARGV[3]))
if dropped > 0 then
  redis.call('INCRBY', KEYS[3], dropped)
end
return 1
