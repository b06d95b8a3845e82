-- fire.lua: claim one fire time of one periodic schedule and enqueue its message, atomically,
-- so that however many workers run the scheduler, each fire time enqueues exactly one message.
-- KEYS[1]  the schedule's state hash (greenq:{q:QUEUE}:schedule:NAME)
-- KEYS[2]  where the message goes: its band stream, or the queue's delayed set (countdown/eta)
-- KEYS[3]  optional: the message's unique key (greenq:{q:QUEUE}:unique:KEY), for overlap=False
--          (KEY = schedule:NAME) or a task with unique_for
-- ARGV[1]  the fire time, epoch ms
-- ARGV[2]  the message body
-- ARGV[3]  its task id
-- ARGV[4]  who fires it (a consumer id, or beat@host)
-- ARGV[5]  now, epoch ms
-- ARGV[6]  the delayed-set score (due ms) when KEYS[2] is the delayed set, else ""
-- ARGV[7]  the delayed-set member ("<priority>|<body>") when delayed, else ""
-- ARGV[8]  how long the state hash is kept after a fire, ms
-- ARGV[9]  with KEYS[3]: the unique key's TTL, ms
-- Returns 1 if this call fired, 0 if that fire time, or a later one, was already claimed, 2 if
-- it claimed the fire time but enqueued nothing because another task holds the unique key (the
-- previous run is still waiting or running).
local last = tonumber(redis.call('HGET', KEYS[1], 'last') or '-1')
if last >= tonumber(ARGV[1]) then return 0 end
if KEYS[3] and redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('HSET', KEYS[1], 'last', ARGV[1], 'worker', ARGV[4], 'at', ARGV[5])
  redis.call('PEXPIRE', KEYS[1], ARGV[8])
  return 2
end
redis.call('HSET', KEYS[1], 'last', ARGV[1], 'task_id', ARGV[3], 'worker', ARGV[4], 'at', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[8])
if KEYS[3] then
  redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[9])
end
if ARGV[6] ~= '' then
  redis.call('ZADD', KEYS[2], ARGV[6], ARGV[7])
else
  redis.call('XADD', KEYS[2], '*', 'm', ARGV[2])
end
return 1
