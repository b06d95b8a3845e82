-- dead.lua: append one dead letter, keep the stream capped, and count what the cap dropped.
-- KEYS[1]     the queue's dead-letter stream (greenq:{q:NAME}:dead)
-- KEYS[2]     the queue's dropped-dead-letters counter (greenq:{q:NAME}:dead:dropped)
-- ARGV[1]     the cap (dead_letter_max)
-- ARGV[2..]   field/value pairs of the entry (m, reason, time, worker, stream)
-- Returns the number of old dead letters dropped by this append.
redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))
local dropped = redis.call('XTRIM', KEYS[1], 'MAXLEN', tonumber(ARGV[1]))
if dropped > 0 then redis.call('INCRBY', KEYS[2], dropped) end
return dropped
