-- Sets each entry unless one ending as late or later is already there (see
-- scripts.rs, REVOKE_MANY). KEYS[1] event stream, KEYS[2] count hash,
-- KEYS[3..] entry keys; ARGV[1] stream MAXLEN, ARGV[2] repeats, then per
-- entry, in the order of its key: value, token_id, unix time it ends.
local events, counts, maxlen, repeats = KEYS[1], KEYS[2], ARGV[1], ARGV[2] == '1'
local codes = {}
for i = 3, #KEYS do
  local key, at = KEYS[i], 3 * (i - 3) + 3
  local value, id, want = ARGV[at], ARGV[at + 1], tonumber(ARGV[at + 2])
  local ttl = redis.call('EXPIRETIME', key)
  local code = 0
  if ttl == -2 or (ttl >= 0 and ttl < want) then
    redis.call('SET', key, value, 'EXAT', want)
    redis.call('XADD', events, 'MAXLEN', '~', maxlen, '*', 'k', 't', 'id', id, 'until', want)
    count_move(counts, ttl, want)
    code = (ttl == -2) and 2 or 1
  elseif repeats and ttl > 0 then
    -- Already there for as long: a job's application (repeats) announces
    -- it again all the same, so that a replica loaded from Postgres before
    -- the job's Postgres write learns it. A rebuild from Postgres does not.
    redis.call('XADD', events, 'MAXLEN', '~', maxlen, '*', 'k', 't', 'id', id, 'until', ttl)
  end
  codes[#codes + 1] = code
end
return codes
