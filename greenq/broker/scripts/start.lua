-- start.lua: everything a batch needs before its tasks start, in one call.
-- KEYS[1..E]      the band stream of each early-ack message (E = ARGV[2])
-- KEYS[E+1..2E]   the recovery markers of each early-ack message's queue
--                 (greenq:{q:NAME}:recovered, written by recover.lua)
-- KEYS[2E+1..2E+L] the band stream of each late-ack message (L = ARGV[E+4], absent: 0)
-- KEYS[2E+L+1..]  the revocation key (greenq:revoked:{ID}) of every message in the batch
-- ARGV[1]         consumer group name
-- ARGV[2]         E, the number of early-ack messages
-- ARGV[3..E+2]    the entry ids of the early-ack messages, in KEYS order
-- ARGV[E+3]       "retry" when the previous attempt for this batch lost its reply: an entry
--                 already acked then was acked by this worker, unless recover.lua marked it
--                 ("<stream>|<id>" in the markers) as taken from a consumer presumed dead
-- ARGV[E+4]       L, the number of late-ack messages
-- ARGV[E+5..]     their entry ids, in KEYS order: not acked, only looked up in the pending list
--                 (gone: recover.lua acked and re-added it for another worker)
-- Early ack: XACK + XDEL each early message. XACK returns 0 for an entry this consumer no
-- longer holds (another worker recovered it while this one's heartbeat had lapsed): the
-- caller must not run it. Returns a string of E+L+N flags: for each early, then each late
-- message '1' if it was still held, then for each message '1' if it is revoked.
local group = ARGV[1]
local early = tonumber(ARGV[2])
local retry = ARGV[early + 3] == 'retry'
local flags = {}
for i = 1, early do
  local stream, id = KEYS[i], ARGV[i + 2]
  local held = redis.call('XACK', stream, group, id)
  redis.call('XDEL', stream, id)
  if held == 0 and retry and not redis.call('ZSCORE', KEYS[early + i], stream .. '|' .. id) then
    held = 1
  end
  flags[#flags + 1] = held == 1 and '1' or '0'
end
local late = tonumber(ARGV[early + 4] or '0')
for i = 1, late do
  local id = ARGV[early + 4 + i]
  local pending = redis.call('XPENDING', KEYS[2 * early + i], group, id, id, 1)
  flags[#flags + 1] = #pending == 1 and '1' or '0'
end
for i = 2 * early + late + 1, #KEYS do
  flags[#flags + 1] = redis.call('EXISTS', KEYS[i]) == 1 and '1' or '0'
end
return table.concat(flags)
