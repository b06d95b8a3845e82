-- release_held.lua: recovery frees the unique keys of the early-ack tasks a dead worker was
-- running (it listed them in its unique-held hash with each heartbeat), then drops the hash.
-- KEYS[1]  the dead worker's heartbeat key (greenq:worker:{CONSUMER}): if it is back, do nothing
-- KEYS[2]  its hash of held keys (greenq:unique-held:{CONSUMER})
-- KEYS[3..]  the unique keys listed there (read by the caller with HGETALL)
-- ARGV[1..]  the task id listed for each of KEYS[3..], in order
-- Returns how many keys were deleted, or -1 if the worker's heartbeat is back.
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
local freed = 0
for i = 3, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[i - 2] then
    freed = freed + redis.call('DEL', KEYS[i])
  end
end
redis.call('DEL', KEYS[2])
return freed
