local now = tonumber(ARGV[1])
local totals = {}
for i, hash in ipairs(KEYS) do
  local fields = redis.call('HGETALL', hash)
  local total, passed = 0, {}
  for j = 1, #fields, 2 do
    if tonumber(fields[j]) < now then
      passed[#passed + 1] = fields[j]
    else
      total = total + math.max(0, tonumber(fields[j + 1]))
    end
  end
  for j = 1, #passed, 1000 do
    redis.call('HDEL', hash, unpack(passed, j, math.min(j + 999, #passed)))
  end
  totals[i] = total
end
return totals
