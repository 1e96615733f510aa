local complete = redis.call('EXISTS', KEYS[2])
local cur = redis.call('GET', KEYS[1])
if not cur then return {false, false, complete} end
local ok, entry = pcall(cjson.decode, cur)
if not ok then return {cur, false, complete} end
return {cur, redis.call('GET', ARGV[1] .. entry.family), complete}
