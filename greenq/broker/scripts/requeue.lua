-- requeue.lua: put reserved-but-unstarted messages of a live consumer back in their stream.
-- KEYS[1]     the band stream the messages were read from
-- ARGV[1]     consumer group name
-- ARGV[2..]   entry ids to return
-- Each message is appended again (same body, same delivery count) and the old entry is
-- acked and deleted in the same atomic step, so a crash can neither lose nor duplicate it.
local stream, group = KEYS[1], ARGV[1]
local moved = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  local found = redis.call('XRANGE', stream, id, id)
  if found[1] then
    local acked = redis.call('XACK', stream, group, id)
    if acked == 1 then
      redis.call('XADD', stream, '*', unpack(found[1][2]))
      moved = moved + 1
    end
    redis.call('XDEL', stream, id)
  end
end
return moved
