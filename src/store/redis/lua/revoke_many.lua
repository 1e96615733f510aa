-- Sets each entry unless one ending as late or later is already there (see
-- scripts.rs, REVOKE_MANY). KEYS[1] event stream, KEYS[2] count hash,
-- KEYS[3..] entry keys; ARGV[1] stream MAXLEN, ARGV[2] repeats, then per
-- entry, in the order of its key: value, token_id, unix time it ends.
--
-- What changed is announced on the stream once the entries are written:
-- one entry announces one token ('k' 't', 'id', 'until'); more are
-- announced together in one entry ('k' 'T', 'ids': a JSON array of
-- token_id, until, token_id, until, …, the untils as strings), so that a
-- chunk of a bulk revocation costs the stream, and every follower reading
-- it, a few entries rather than one a token.
local events, counts, maxlen, repeats = KEYS[1], KEYS[2], ARGV[1], ARGV[2] == '1'
local codes, told = {}, {}
for i = 3, #KEYS do
  local key, at = KEYS[i], 3 * (i - 3) + 3
  -- `ends` as given (a string) goes back to Redis, `want` is compared:
  -- see count_move on numbers as arguments
  local value, id, ends = ARGV[at], ARGV[at + 1], ARGV[at + 2]
  local want = tonumber(ends)
  local ttl = redis.call('EXPIRETIME', key)
  local code = 0
  if ttl == -2 or (ttl >= 0 and ttl < want) then
    redis.call('SET', key, value, 'EXAT', ends)
    told[#told + 1] = id
    told[#told + 1] = ends
    count_move(counts, ttl, want)
    code = (ttl == -2) and 2 or 1
  elseif repeats and ttl > 0 then
    -- Already there for as long: a job's application (repeats) announces
    -- it again all the same, so that a replica loaded from Postgres before
    -- the job's Postgres write learns it. A rebuild from Postgres does not.
    told[#told + 1] = id
    told[#told + 1] = string.format('%d', ttl)
  end
  codes[#codes + 1] = code
end
if #told == 2 then
  redis.call('XADD', events, 'MAXLEN', '~', maxlen, '*', 'k', 't', 'id', told[1], 'until', told[2])
elseif #told > 2 then
  -- The cap counts entries: with n tokens an entry, the stream keeps
  -- maxlen / n of them, about as many tokens (and bytes) as maxlen single
  -- entries hold, not n times as many.
  local cap = math.max(1000, math.floor(tonumber(maxlen) / (#told / 2)))
  redis.call('XADD', events, 'MAXLEN', '~', string.format('%d', cap), '*', 'k', 'T', 'ids',
             cjson.encode(told))
end
return codes
