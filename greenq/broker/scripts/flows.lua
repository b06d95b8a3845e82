-- flows.lua: the runtime controls (greenq queue pause|resume|limit) of a worker's queues, read
-- every 0.5 s: one reply however many queues, naming only the queues that have any (on one
-- Redis; on a cluster the keys span slots, and the worker sends one HGETALL per queue instead).
-- KEYS[1..n]  the queues' flow hashes (greenq:{q:NAME}:flow); most do not exist
-- Returns a flat list {i, {field, value, ...}, j, {...}, ...}: the (1-based) index and the
-- fields of every flow hash that exists.
local found = {}
local CHUNK = 50  -- hashes asked at once whether any exists
for from = 1, #KEYS, CHUNK do
  local to = math.min(from + CHUNK - 1, #KEYS)
  if redis.call('EXISTS', unpack(KEYS, from, to)) > 0 then
    for i = from, to do
      local fields = redis.call('HGETALL', KEYS[i])
      if #fields > 0 then
        found[#found + 1] = i
        found[#found + 1] = fields
      end
    end
  end
end
return found
