-- Shared by the write scripts: moves one key in its kind's count hash
-- ({prefix}count:jti / count:sub: field = the minute the key ends, value =
-- how many keys end then) from the minute `old` (a unix time, or negative
-- for a key that did not exist) to the minute `new`. A count is never taken
-- below zero (keys written before counting began).
--
-- Numbers go to Redis as strings made with '%d': a Lua number argument is
-- formatted with '%.17g', a slow float conversion (measured: ~9 % of
-- Redis's time under a bulk revocation, with the same in revoke_many.lua).
local function count_move(hash, old, new)
  if old >= 0 then
    local from = string.format('%d', math.floor(old / 60))
    if tonumber(redis.call('HGET', hash, from) or '0') > 0 then
      redis.call('HINCRBY', hash, from, '-1')
    end
  end
  redis.call('HINCRBY', hash, string.format('%d', math.floor(new / 60)), '1')
end
