local ttl = redis.call('EXPIRETIME', KEYS[1])
local want = tonumber(ARGV[4])
if ttl == -2 or (ttl >= 0 and ttl < want) then
  redis.call('SET', KEYS[1], ARGV[1], 'EXAT', want)
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'k', 't', 'id', ARGV[3], 'until', ARGV[4])
  count_move(KEYS[3], ttl, want)
  if ttl == -2 then return 2 end
  return 1
end
-- Already there for as long: a job's application (ARGV[6] = 1) announces
-- it again all the same, so that a replica loaded from Postgres before the
-- job's Postgres write learns it. A rebuild from Postgres does not.
if ARGV[6] == '1' and ttl > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'k', 't', 'id', ARGV[3], 'until', ttl)
end
return 0
