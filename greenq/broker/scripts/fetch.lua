-- fetch.lua: reserve up to COUNT new messages for one consumer, highest priority band first.
-- KEYS[1..n]  the queue's band streams, highest priority first (greenq:{q:NAME}:stream[:pP])
-- ARGV[1]     consumer group name
-- ARGV[2]     consumer name (unique per worker process)
-- ARGV[3]     COUNT: most messages to reserve in this call
-- ARGV[4]     "1" (or absent): return tails when fewer than COUNT were reserved; "0": never
-- Returns {entries, tails}: entries is a flat list of {band index, id, body, deliveries};
-- when fewer than COUNT were reserved (the bands are left empty), tails holds each stream's
-- newest id ("0-0" if none) so the caller can block with XREAD on exactly the entries that
-- arrive after this call.
local group, consumer = ARGV[1], ARGV[2]
local remaining = tonumber(ARGV[3])
local entries = {}
for index, key in ipairs(KEYS) do
  if remaining <= 0 then break end
  if redis.call('EXISTS', key) == 1 then
    local reply = redis.pcall('XREADGROUP', 'GROUP', group, consumer,
                              'COUNT', remaining, 'STREAMS', key, '>')
    if type(reply) == 'table' and reply.err then
      -- NOGROUP: the producer made the stream before any worker; start the group at 0
      -- so every message already there is delivered.
      redis.call('XGROUP', 'CREATE', key, group, '0')
      reply = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', remaining,
                         'STREAMS', key, '>')
    end
    if reply then
      for _, item in ipairs(reply[1][2]) do
        local fields = item[2]
        local body, deliveries = nil, '1'
        for i = 1, #fields, 2 do
          if fields[i] == 'm' then body = fields[i + 1]
          elseif fields[i] == 'd' then deliveries = fields[i + 1] end
        end
        entries[#entries + 1] = index
        entries[#entries + 1] = item[1]
        entries[#entries + 1] = body or ''
        entries[#entries + 1] = deliveries
        remaining = remaining - 1
      end
    end
  end
end
local tails = {}
if remaining > 0 and ARGV[4] ~= '0' then
  for index, key in ipairs(KEYS) do
    local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
    tails[index] = (last[1] and last[1][1]) or '0-0'
  end
end
return {entries, tails}
