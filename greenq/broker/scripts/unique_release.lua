-- unique_release.lua: free a unique key when its task has finished (SUCCESS, FAILURE, REVOKED),
-- only if that task still holds it: after a TTL expiry another task may hold the key by now.
-- KEYS[1]  the unique key (greenq:{q:QUEUE}:unique:KEY)
-- ARGV[1]  the finished task's id
-- Returns 1 if the key was deleted, 0 if it was gone or held by another task.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
