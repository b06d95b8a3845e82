-- progress.lua: write a custom state (update_state) to a task's result stream unless the
-- stream's newest record is already final.
-- KEYS[1]  the task's result stream
-- ARGV[1]  time to live in milliseconds
-- ARGV[2]  the JSON state record
-- ARGV[3]  how many records the stream keeps (about), so that a reader a little behind still
--          sees every update; the final write (store_results.lua) trims it to one.
-- Returns 1 if written, 0 if the task had already finished.
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
if last then
  local fields = last[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'r' then
      -- result_payload writes "state" before any user data, and a JSON string cannot hold an
      -- unescaped quote: the first match is the record's own state.
      local state = string.match(fields[i + 1], '"state":"(%u+)"')
      if state == 'SUCCESS' or state == 'FAILURE' or state == 'REVOKED' then
        return 0
      end
    end
  end
end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'r', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
