-- Moves due jobs from the scheduled set to the active list, 1,000 at a time
-- (apalis-redis's fetch moves them all with one unpack, which Lua refuses
-- from about 8,000 ids on).
-- KEYS[1] scheduled set, KEYS[2] active list, KEYS[3] signal list;
-- ARGV[1] now (unix seconds). Returns how many moved.
local total = 0
while total < 100000 do
  local ids = redis.call('ZRANGEBYSCORE', KEYS[1], 0, ARGV[1], 'LIMIT', 0, 1000)
  if #ids == 0 then break end
  redis.call('RPUSH', KEYS[2], unpack(ids))
  redis.call('ZREM', KEYS[1], unpack(ids))
  total = total + #ids
end
if total > 0 then
  redis.call('DEL', KEYS[3])
  redis.call('LPUSH', KEYS[3], 1)
end
return total
