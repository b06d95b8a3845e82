-- due.lua: which of a worker's delayed sets have a member due now, and when the next is due:
-- the due-ETA mover's probe, every <= 100 ms, in one reply however many queues (on one Redis;
-- on a cluster the keys span slots, and the mover sends one ZRANGE per queue instead).
-- KEYS[1..n]  the delayed sets of the worker's queues (greenq:{q:NAME}:delayed)
-- Returns {server time (ms), the soonest score not yet due (ms) or -1, i, j, ...}: i, j ...
-- are the (1-based) indexes of the sets whose first member is due.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local reply = {now, -1}
local soonest = -1
local CHUNK = 50  -- sets asked at once whether any exists: most are empty, and then absent
for from = 1, #KEYS, CHUNK do
  local to = math.min(from + CHUNK - 1, #KEYS)
  if redis.call('EXISTS', unpack(KEYS, from, to)) > 0 then
    for i = from, to do
      local first = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
      if first[2] then
        local score = tonumber(first[2])
        if score <= now then
          reply[#reply + 1] = i
        elseif soonest < 0 or score < soonest then
          soonest = score
        end
      end
    end
  end
end
reply[2] = math.ceil(soonest)
return reply
