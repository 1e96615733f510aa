local names = {[0] = 'active', [1] = 'rotated', [2] = 'revoked'}
local ranks = {active = 0, rotated = 1, revoked = 2}
local rank = tonumber(ARGV[4])
local cur = redis.call('GET', KEYS[1])
local old = nil
if cur then
  local ok, decoded = pcall(cjson.decode, cur)
  if ok and type(decoded) == 'table' then old = decoded end
  if old and ranks[old.state] and ranks[old.state] > rank then rank = ranks[old.state] end
end
-- a revoked family revokes its active members; a rotated one stays
-- rotated, so presenting it again is still told apart as reuse
if rank == 0 and redis.call('EXISTS', KEYS[2]) == 1 then rank = 2 end
local want = tonumber(ARGV[5])
local ends = redis.call('EXPIRETIME', KEYS[1])
if old and ends >= want and old.state == names[rank] and old.family == ARGV[2]
  and old.exp == tonumber(ARGV[3])
  and (old.sub == ARGV[1] or (ARGV[1] == '' and (old.sub == nil or old.sub == cjson.null))) then
  -- announced again by a job's application (ARGV[8], see revoke_many.lua)
  if ARGV[8] == '1' then
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '*', 'k', 'r', 'id', ARGV[6], 'fam', ARGV[2],
      'st', rank, 'until', ends)
  end
  return rank
end
if ends > want then want = ends end
local entry = {family = ARGV[2], exp = tonumber(ARGV[3]), state = names[rank]}
if ARGV[1] ~= '' then entry.sub = ARGV[1] else entry.sub = cjson.null end
redis.call('SET', KEYS[1], cjson.encode(entry), 'EXAT', want)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '*', 'k', 'r', 'id', ARGV[6], 'fam', ARGV[2],
  'st', rank, 'until', want)
return rank
