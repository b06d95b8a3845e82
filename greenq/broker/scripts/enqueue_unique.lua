-- enqueue_unique.lua: enqueue a unique message unless another task holds its unique key, in one
-- script, so that of any number of concurrent enqueues of one key exactly one adds a message.
-- KEYS[1]  the unique key (greenq:{q:QUEUE}:unique:KEY); its value is the holder's task id
-- KEYS[2]  where the message goes: its band stream, or the queue's delayed set (future eta)
-- ARGV[1]  the message's task id
-- ARGV[2]  the key's TTL, ms
-- ARGV[3]  the message body
-- ARGV[4]  the delayed-set score (due ms) when KEYS[2] is the delayed set, else ""
-- ARGV[5]  the delayed-set member ("<priority>|<body>") when delayed, else ""
-- Returns the id of the task that holds the key: ARGV[1] if this call enqueued, else the
-- existing holder's (nothing is added then).
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('GET', KEYS[1])
end
if ARGV[4] ~= '' then
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])
else
  redis.call('XADD', KEYS[2], '*', 'm', ARGV[3])
end
return ARGV[1]
