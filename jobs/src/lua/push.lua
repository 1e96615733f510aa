-- Enqueues jobs in apalis-redis's layout, straight onto the active list
-- (apalis-redis's own push parks every job in the scheduled set).
-- KEYS[1] data hash, KEYS[2] active list, KEYS[3] signal list, KEYS[4] meta
-- prefix, KEYS[5] idempotency prefix; ARGV[1] idempotency TTL, ARGV[2] the
-- wake-up channel (published once when a job was queued, so that idle
-- workers fetch at once: no second round trip), then per job: id, payload,
-- idempotency key ('' for none). Returns how many were queued.
local queued = 0
for i = 3, #ARGV, 3 do
  local id, data, key = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local fresh = true
  if #key > 0 then
    fresh = redis.call('SET', KEYS[5] .. ':' .. key, id, 'NX', 'EX', ARGV[1]) ~= false
  end
  if fresh and redis.call('HSETNX', KEYS[1], id, data) == 1 then
    redis.call('HSET', KEYS[4] .. ':' .. id, 'attempts', 0, 'max_attempts', 25, 'status', 'Pending',
      'idempotency_key', key)
    redis.call('RPUSH', KEYS[2], id)
    queued = queued + 1
  end
end
if queued > 0 then
  redis.call('DEL', KEYS[3])
  redis.call('LPUSH', KEYS[3], 1)
  redis.call('PUBLISH', ARGV[2], 1)
end
return queued
