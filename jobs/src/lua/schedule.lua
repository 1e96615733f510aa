-- Parks one job in apalis-redis's scheduled set, from which workers promote
-- it once due.
-- KEYS[1] data hash, KEYS[2] scheduled set, KEYS[3] meta prefix; ARGV[1]
-- id, ARGV[2] payload, ARGV[3] due time (unix seconds). Returns 1 when
-- parked, 0 when the id was taken.
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('HSET', KEYS[3] .. ':' .. ARGV[1], 'attempts', 0, 'max_attempts', 25, 'status', 'Pending',
  'idempotency_key', '')
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
