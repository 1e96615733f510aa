local cur = tonumber(redis.call('GET', KEYS[1]))
local nb = tonumber(ARGV[1])
if cur and cur >= nb then
  -- announced again by a job's application (ARGV[7], see revoke_many.lua)
  local ends = redis.call('EXPIRETIME', KEYS[1])
  if ARGV[7] == '1' and ends > 0 then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'k', ARGV[6], 'id', ARGV[3], 'nb', cur, 'until', ends)
  end
  return 0
end
local old = redis.call('EXPIRETIME', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'k', ARGV[6], 'id', ARGV[3], 'nb', ARGV[1], 'until', ARGV[4])
count_move(KEYS[3], old, redis.call('EXPIRETIME', KEYS[1]))
if cur then return 1 end
return 2
