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
  -- A grouped entry holds up to 128 tokens, so a cap that counts entries
  -- would let the stream hold 128 times as many tokens; and a cap scaled
  -- down by the group's size would cut the single entries' history below
  -- the minute a loading replica replays (REPLAY_MS in
  -- read/replica/snapshot.rs). It trims by age instead: entries older than
  -- two minutes go (whole stream nodes, '~'), so the stream holds at most
  -- two minutes of grouped writes, and always the last minute.
  local now = redis.call('TIME')
  local keep_from = string.format('%d', (tonumber(now[1]) - 120) * 1000)
  redis.call('XADD', events, 'MINID', '~', keep_from, '*', 'k', 'T', 'ids', cjson.encode(told))
end
return codes
