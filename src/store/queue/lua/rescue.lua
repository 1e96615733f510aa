-- Moves a failed worker's in-flight jobs back to the active list and
-- deregisters it (apalis-redis waits for its heartbeat to lapse, and a
-- graceful stop does not deregister).
-- KEYS[1] workers set, KEYS[2] the worker's in-flight set, KEYS[3] active
-- list, KEYS[4] signal list, KEYS[5] worker metadata; ARGV[1] worker name.
-- Returns how many jobs moved.
local jobs = redis.call('SMEMBERS', KEYS[2])
if #jobs > 0 then
  redis.call('RPUSH', KEYS[3], unpack(jobs))
  redis.call('DEL', KEYS[2])
  redis.call('DEL', KEYS[4])
  redis.call('LPUSH', KEYS[4], 1)
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[5])
return #jobs
