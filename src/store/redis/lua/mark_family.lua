if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  -- announced again by a job's application (ARGV[6], see revoke_many.lua)
  local ends = redis.call('EXPIRETIME', KEYS[1])
  if ARGV[6] == '1' and ends > 0 then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'k', 'f', 'id', ARGV[3], 'until', ends)
  end
  return 0
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'k', 'f', 'id', ARGV[3], 'until', ARGV[5])
return 1
