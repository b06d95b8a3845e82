-- consumers.lua: the other consumers of a worker's band streams, which recovery checks for a
-- heartbeat every second: one reply however many bands (on one Redis; on a cluster the keys
-- span slots, and recovery sends EXISTS and XINFO CONSUMERS per band instead).
-- KEYS[1..n]  band streams (greenq:{q:NAME}:stream[:pP]), band by band: most priorities are
--             never used, so whole runs of them do not exist
-- ARGV[1]     consumer group name
-- ARGV[2]     the asking consumer, left out
-- Returns a flat list {i, name, j, name, ...}: the (1-based) index of a band and one of its
-- consumers other than ARGV[2], for every such pair.
local group, own = ARGV[1], ARGV[2]
local found = {}
local CHUNK = 50  -- bands asked at once whether any exists (the caller lists them band by band)
for from = 1, #KEYS, CHUNK do
  local to = math.min(from + CHUNK - 1, #KEYS)
  if redis.call('EXISTS', unpack(KEYS, from, to)) > 0 then
    for i = from, to do
      local consumers = redis.pcall('XINFO', 'CONSUMERS', KEYS[i], group)
      if not consumers.err then  -- no such key, or NOGROUP: no worker has read this band yet
        for _, consumer in ipairs(consumers) do
          if consumer[2] ~= own then  -- {'name', NAME, 'pending', n, 'idle', ms, ...}
            found[#found + 1] = i
            found[#found + 1] = consumer[2]
          end
        end
      end
    end
  end
end
return found
