//! The Redis deny-list: `{prefix}jti:{token_id}` entries and
//! `{prefix}sub:{subject}` watermarks, written only through small Lua scripts
//! so that repeated or reordered jobs converge on the same state.

use std::sync::LazyLock;

use redis::{Script, aio::ConnectionManager};
use serde::{Deserialize, Serialize};

/// Most recent revocation events kept in `{prefix}events` (approximate trim).
pub const EVENTS_MAXLEN: u64 = 100_000;

/// Lua shared by the write scripts: moves one key in its kind's count hash
/// (`{prefix}count:jti` / `count:sub`: field = the minute the key ends,
/// value = how many keys end then) from the minute `old` (a unix time, or
/// negative for a key that did not exist) to the minute `new`. A count is
/// never taken below zero (keys written before counting began).
const COUNT_MOVE: &str = r"
local function count_move(hash, old, new)
  if old >= 0 then
    local from = math.floor(old / 60)
    if tonumber(redis.call('HGET', hash, from) or '0') > 0 then
      redis.call('HINCRBY', hash, from, -1)
    end
  end
  redis.call('HINCRBY', hash, math.floor(new / 60), 1)
end
";

/// Sets an entry unless one ending as late or later is already there and,
/// when it changed anything, appends the event that local replicas follow —
/// in the same script, so the stream never lags the deny-list — and moves
/// the entry in the count hash. Ends are
/// compared as absolute times (`EXPIRETIME`, Redis 7.0), so a rebuild or
/// cleanup that finds an entry as it would write it leaves it alone (a
/// rounded remaining TTL against a floored target rewrote most keys).
/// KEYS[1] entry key, KEYS[2] event stream, KEYS[3] count hash; ARGV[1]
/// value, ARGV[2] TTL in seconds (informational), ARGV[3] token_id, ARGV[4]
/// unix time the entry ends, ARGV[5] stream MAXLEN. Returns 2 when the key
/// was missing, 1 when its end was moved later, 0 when unchanged.
static REVOKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{COUNT_MOVE}
local ttl = redis.call('EXPIRETIME', KEYS[1])
local want = tonumber(ARGV[4])
if ttl == -2 or (ttl >= 0 and ttl < want) then
  redis.call('SET', KEYS[1], ARGV[1], 'EXAT', want)
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'k', 't', 'id', ARGV[3], 'until', ARGV[4])
  count_move(KEYS[3], ttl, want)
  if ttl == -2 then return 2 end
  return 1
end
return 0"
    ))
});

/// Raises a watermark, never lowers it, appends the event and moves it in
/// the count hash when it did. KEYS[1] watermark key, KEYS[2] event stream,
/// KEYS[3] count hash; ARGV[1] not_before, ARGV[2] TTL in seconds, ARGV[3]
/// subject, ARGV[4] unix time the watermark ends, ARGV[5] stream MAXLEN.
/// Returns 2 when the key was missing, 1 when raised, 0 when already as high.
static RAISE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{COUNT_MOVE}
local cur = tonumber(redis.call('GET', KEYS[1]))
local nb = tonumber(ARGV[1])
if cur and cur >= nb then return 0 end
local old = redis.call('EXPIRETIME', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'k', 's', 'id', ARGV[3], 'nb', ARGV[1], 'until', ARGV[4])
count_move(KEYS[3], old, redis.call('EXPIRETIME', KEYS[1]))
if cur then return 1 end
return 2"
    ))
});

/// Sums the count hashes' minutes from the current one on, and drops the
/// minutes that have passed (their keys have expired). KEYS[1] token count
/// hash, KEYS[2] subject count hash; ARGV[1] the current minute (unix time
/// / 60). Returns {tokens, subjects}.
static COUNT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
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
return totals",
    )
});

/// What a pipelined write did: keys created (were missing) and touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Written {
    /// Keys that did not exist.
    pub created: u64,
    /// Keys created, extended or raised.
    pub changed: u64,
}

impl Written {
    fn add(&mut self, code: i64) {
        self.created += u64::from(code == 2);
        self.changed += u64::from(code > 0);
    }
}

/// Sets the marker only if the rebuild's own key survived. KEYS[1] rebuild
/// key, KEYS[2] marker; ARGV[1] the server's run id.
static FINISH_REBUILD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('DEL', KEYS[1]) == 0 then return 0 end
redis.call('SET', KEYS[2], ARGV[1])
return 1",
    )
});

/// Deletes a key (a lease, the marker) only if its value matches. KEYS[1]
/// the key; ARGV[1] the expected value (a lease's holder).
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0",
    )
});

/// The value stored under `{prefix}jti:{token_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DenyEntry {
    /// The token's subject, if any.
    pub sub: Option<String>,
    /// The token's expiry (unix seconds).
    pub exp: i64,
    /// When it was revoked (unix seconds).
    pub revoked_at: i64,
    /// Why.
    pub reason: Option<String>,
}

/// What Redis knows about one token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lookup {
    /// The marker is present: Redis holds the whole deny-list. When it is
    /// missing (data lost, rebuild pending) the answer must come from Postgres.
    pub complete: bool,
    /// The token_id is on the deny-list.
    pub denied: bool,
    /// The subject's revocation watermark, if any.
    pub not_before: Option<i64>,
}

/// Key layout and operations of the deny-list under one prefix.
#[derive(Clone)]
pub struct DenyList {
    pub(super) conn: ConnectionManager,
    pub(super) prefix: String,
}

impl DenyList {
    /// The deny-list under `prefix` on `conn`.
    pub fn new(conn: ConnectionManager, prefix: &str) -> Self {
        Self {
            conn,
            prefix: prefix.to_owned(),
        }
    }

    /// `{prefix}jti:{token_id}`.
    pub fn jti_key(&self, token_id: &str) -> String {
        format!("{}jti:{token_id}", self.prefix)
    }

    /// `{prefix}sub:{subject}`.
    pub fn sub_key(&self, subject: &str) -> String {
        format!("{}sub:{subject}", self.prefix)
    }

    /// One round trip: is the deny-list complete, is `token_id` (or `twin`,
    /// another id of the same token) denied, and what is `subject`'s
    /// watermark?
    pub async fn lookup(
        &self,
        token_id: &str,
        twin: Option<&str>,
        subject: Option<&str>,
    ) -> redis::RedisResult<Lookup> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("MGET");
        // marker, the token's ids, then the subject's watermark.
        cmd.arg(self.marker_key()).arg(self.jti_key(token_id));
        if let Some(twin) = twin {
            cmd.arg(self.jti_key(twin));
        }
        if let Some(sub) = subject {
            cmd.arg(self.sub_key(sub));
        }
        let values: Vec<Option<String>> = cmd.query_async(&mut conn).await?;
        let ids = 1 + usize::from(twin.is_some());
        Ok(Lookup {
            complete: values.first().is_some_and(Option::is_some),
            denied: values.iter().skip(1).take(ids).any(Option::is_some),
            not_before: subject
                .and(values.get(1 + ids))
                .and_then(|v| v.as_deref())
                .and_then(|v| v.parse().ok()),
        })
    }

    /// `{prefix}events`: the stream of applied revocations replicas follow.
    pub fn events_key(&self) -> String {
        format!("{}events", self.prefix)
    }

    /// The REVOKE call for an entry living `ttl_secs` from `now`.
    fn revoke_invocation(
        &self,
        token_id: &str,
        entry: &DenyEntry,
        ttl_secs: i64,
        now: i64,
    ) -> redis::ScriptInvocation<'static> {
        let value = serde_json::to_string(entry).unwrap_or_default();
        let mut invocation = REVOKE.prepare_invoke();
        invocation
            .key(self.jti_key(token_id))
            .key(self.events_key())
            .key(self.count_key("jti"))
            .arg(value)
            .arg(ttl_secs)
            .arg(token_id)
            .arg(now.saturating_add(ttl_secs))
            .arg(EVENTS_MAXLEN);
        invocation
    }

    fn raise_invocation(
        &self,
        subject: &str,
        not_before: i64,
        ttl_secs: i64,
    ) -> redis::ScriptInvocation<'static> {
        let mut invocation = RAISE.prepare_invoke();
        invocation
            .key(self.sub_key(subject))
            .key(self.events_key())
            .key(self.count_key("sub"))
            .arg(not_before)
            .arg(ttl_secs)
            .arg(subject)
            .arg(revokd_jobs::now_unix().saturating_add(ttl_secs))
            .arg(EVENTS_MAXLEN);
        invocation
    }

    /// Puts `token_id` on the deny-list for `ttl_secs` (must be > 0), keeping
    /// a longer TTL already there.
    pub async fn deny(
        &self,
        token_id: &str,
        entry: &DenyEntry,
        ttl_secs: i64,
    ) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        let _: i64 = self
            .revoke_invocation(token_id, entry, ttl_secs, revokd_jobs::now_unix())
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Raises `subject`'s watermark to `not_before` (never lowers it).
    pub async fn raise_watermark(
        &self,
        subject: &str,
        not_before: i64,
        ttl_secs: i64,
    ) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        let _: i64 = self
            .raise_invocation(subject, not_before, ttl_secs)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Writes many entries in one pipelined round trip (same rules as
    /// [`DenyList::deny`]).
    pub async fn deny_many(
        &self,
        entries: &[(String, DenyEntry, i64)],
    ) -> redis::RedisResult<Written> {
        self.deny_many_as_of(entries, revokd_jobs::now_unix()).await
    }

    /// [`DenyList::deny_many`] with TTLs computed as of `now`: each entry
    /// ends at `now + ttl`, so TTLs the caller derived from the same `now`
    /// give the same end on every run (a rebuild rewrites nothing unchanged).
    pub async fn deny_many_as_of(
        &self,
        entries: &[(String, DenyEntry, i64)],
        now: i64,
    ) -> redis::RedisResult<Written> {
        let mut pipe = redis::pipe();
        pipe.load_script(&REVOKE).ignore();
        for (token_id, entry, ttl) in entries {
            pipe.invoke_script(&self.revoke_invocation(token_id, entry, *ttl, now));
        }
        self.run_counted(pipe).await
    }

    /// Raises many watermarks in one pipelined round trip.
    pub async fn raise_many(
        &self,
        marks: &[(String, i64)],
        ttl_secs: i64,
    ) -> redis::RedisResult<Written> {
        let mut pipe = redis::pipe();
        pipe.load_script(&RAISE).ignore();
        for (subject, not_before) in marks {
            pipe.invoke_script(&self.raise_invocation(subject, *not_before, ttl_secs));
        }
        self.run_counted(pipe).await
    }

    async fn run_counted(&self, pipe: redis::Pipeline) -> redis::RedisResult<Written> {
        let mut conn = self.conn.clone();
        let codes: Vec<i64> = pipe.query_async(&mut conn).await?;
        let mut written = Written::default();
        codes.into_iter().for_each(|c| written.add(c));
        Ok(written)
    }

    /// Keeps the last cleanup's counts (`{prefix}cleanup:last`) for `/metrics`
    /// of every process; best effort.
    pub async fn store_cleanup_report(&self, report: &crate::worker::maintenance::CleanupReport) {
        let mut conn = self.conn.clone();
        let value = serde_json::to_string(report).unwrap_or_default();
        let stored: redis::RedisResult<()> = redis::cmd("SET")
            .arg(format!("{}cleanup:last", self.prefix))
            .arg(value)
            .query_async(&mut conn)
            .await;
        if let Err(error) = stored {
            tracing::debug!(%error, "cannot store the cleanup report");
        }
    }

    /// The last cleanup's counts, if any.
    pub async fn cleanup_report(
        &self,
    ) -> redis::RedisResult<Option<crate::worker::maintenance::CleanupReport>> {
        let mut conn = self.conn.clone();
        let value: Option<String> = redis::cmd("GET")
            .arg(format!("{}cleanup:last", self.prefix))
            .query_async(&mut conn)
            .await?;
        Ok(value.and_then(|v| serde_json::from_str(&v).ok()))
    }

    /// `{prefix}marker`: present while Redis holds the whole deny-list.
    pub fn marker_key(&self) -> String {
        format!("{}marker", self.prefix)
    }

    /// Whether the marker is present.
    pub async fn marker_present(&self) -> redis::RedisResult<bool> {
        let mut conn = self.conn.clone();
        redis::cmd("EXISTS")
            .arg(self.marker_key())
            .query_async(&mut conn)
            .await
    }

    /// Starts a rebuild: a key that lasts only as long as Redis keeps its
    /// data, so the marker is not set over a rebuild that a flush cut short.
    pub async fn begin_rebuild(&self, id: &str) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        redis::cmd("SET")
            .arg(format!("{}rebuilding:{id}", self.prefix))
            .arg(1)
            .arg("EX")
            .arg(3600)
            .query_async(&mut conn)
            .await
    }

    /// Ends a rebuild: sets the marker to `server` (the server's run id, see
    /// [`server_id`](Self::server_id)) if Redis kept its data throughout;
    /// false when it did not (the rebuild must run again).
    pub async fn finish_rebuild(&self, id: &str, server: &str) -> redis::RedisResult<bool> {
        let mut conn = self.conn.clone();
        let done: i64 = FINISH_REBUILD
            .key(format!("{}rebuilding:{id}", self.prefix))
            .key(self.marker_key())
            .arg(server)
            .invoke_async(&mut conn)
            .await?;
        Ok(done == 1)
    }

    /// The run id of the Redis server this connection reaches: a restart
    /// (even from an older snapshot) or a failover to a replica changes it.
    pub async fn server_id(&self) -> redis::RedisResult<String> {
        let mut conn = self.conn.clone();
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut conn)
            .await?;
        info.lines()
            .find_map(|line| line.strip_prefix("run_id:"))
            .map(|id| id.trim().to_owned())
            .ok_or_else(|| redis::RedisError::from((redis::ErrorKind::Parse, "no run_id in INFO")))
    }

    /// Whether the marker says this very server holds the whole deny-list.
    /// A marker set on another server — it came here by replication before
    /// a failover, or from a snapshot this server restarted from — proves
    /// nothing about what this server lost meanwhile: it is deleted (checks
    /// go to Postgres) and false is returned, so the deny-list is rebuilt.
    pub async fn marker_current(&self) -> redis::RedisResult<bool> {
        let mut conn = self.conn.clone();
        let marker: Option<String> = redis::cmd("GET")
            .arg(self.marker_key())
            .query_async(&mut conn)
            .await?;
        let Some(marker) = marker else {
            return Ok(false);
        };
        if marker == self.server_id().await? {
            return Ok(true);
        }
        let _: i64 = RELEASE
            .key(self.marker_key())
            .arg(&marker)
            .invoke_async(&mut conn)
            .await?;
        tracing::warn!(
            "redis is not the server that was rebuilt (restart from a snapshot, or failover): rebuilding the deny-list from postgres"
        );
        Ok(false)
    }

    /// Takes a short lease named `name` (SET NX PX); true when taken.
    pub async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> redis::RedisResult<bool> {
        let mut conn = self.conn.clone();
        let taken: Option<String> = redis::cmd("SET")
            .arg(format!("{}lease:{name}", self.prefix))
            .arg(holder)
            .arg("NX")
            .arg("PX")
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
            .query_async(&mut conn)
            .await?;
        Ok(taken.is_some())
    }

    /// Releases a lease if `holder` still holds it.
    pub async fn release_lease(&self, name: &str, holder: &str) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        let _: i64 = RELEASE
            .key(format!("{}lease:{name}", self.prefix))
            .arg(holder)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Publishes `message` on `channel`; failures are only logged (a
    /// waiter that misses it asks Postgres at its deadline, nothing is lost).
    pub async fn publish(&self, channel: &str, message: &str) {
        let mut conn = self.conn.clone();
        let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
            .arg(channel)
            .arg(message)
            .query_async(&mut conn)
            .await;
        if let Err(error) = sent {
            tracing::debug!(%error, "publish failed");
        }
    }

    /// `{prefix}count:{kind}`: how many `{kind}:` keys end in each minute.
    fn count_key(&self, kind: &str) -> String {
        format!("{}count:{kind}", self.prefix)
    }

    /// Deny-list entries and watermarks alive as of `now`, from the counts
    /// the write scripts keep: O(distinct minutes the keys end in), no key
    /// scan. Keys that expired within the current minute are still counted;
    /// keys written by a version that did not count, or deleted by hand or
    /// evicted, are not seen (see the README, "Counts").
    pub async fn revocation_counts(&self, now: i64) -> redis::RedisResult<(u64, u64)> {
        let mut conn = self.conn.clone();
        let (tokens, subjects): (u64, u64) = COUNT
            .key(self.count_key("jti"))
            .key(self.count_key("sub"))
            .arg(now.div_euclid(60))
            .invoke_async(&mut conn)
            .await?;
        Ok((tokens, subjects))
    }

    /// Counts keys under `{prefix}{kind}` (`jti:` or `sub:`) with SCAN:
    /// costs a pass over the whole keyspace; for tools and tests, never on
    /// a request.
    pub async fn count(&self, kind: &str) -> redis::RedisResult<u64> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}{kind}*", glob_escape(&self.prefix));
        let mut cursor = 0u64;
        let mut total = 0u64;
        loop {
            let (next, keys) = scan_page(&mut conn, cursor, &pattern, 1000).await?;
            total += keys.len() as u64;
            if next == 0 {
                return Ok(total);
            }
            cursor = next;
        }
    }

    /// Every deny-list entry, watermark, refresh-token entry and revoked
    /// family, with the unix time each ends; SCAN plus pipelined reads.
    pub async fn snapshot(&self) -> redis::RedisResult<Snapshot> {
        /// Keys asked for per SCAN call: one pass over the keyspace, each
        /// batch's values fetched in one pipeline before the next SCAN.
        const SCAN_COUNT: usize = 5_000;
        let now = revokd_jobs::now_unix();
        let mut conn = self.conn.clone();
        let mut snapshot = Snapshot::default();
        let pattern = format!("{}*", glob_escape(&self.prefix));
        let mut cursor = 0u64;
        loop {
            let (next, keys) = scan_page(&mut conn, cursor, &pattern, SCAN_COUNT).await?;
            // (kind, id) of each deny-list key; the prefix's other keys (the
            // queue, the stream, the marker) are passed over.
            let wanted: Vec<(SnapshotKind, &str, &str)> = keys
                .iter()
                .filter_map(|key| {
                    let rest = key.strip_prefix(self.prefix.as_str())?;
                    SnapshotKind::ALL.iter().find_map(|&kind| {
                        rest.strip_prefix(kind.tag())
                            .map(|id| (kind, key.as_str(), id))
                    })
                })
                .collect();
            if !wanted.is_empty() {
                let mut pipe = redis::pipe();
                for (kind, key, _) in &wanted {
                    if kind.has_value() {
                        pipe.get(*key);
                    } else {
                        // A placeholder reply, so every key answers (value, ttl).
                        pipe.cmd("TYPE").arg(*key);
                    }
                    pipe.ttl(*key);
                }
                let values: Vec<(Option<String>, i64)> = pipe.query_async(&mut conn).await?;
                for ((kind, _, id), (value, ttl)) in wanted.into_iter().zip(values) {
                    if ttl > 0 {
                        snapshot.add(kind, id.to_owned(), value, now + ttl);
                    }
                }
            }
            if next == 0 {
                return Ok(snapshot);
            }
            cursor = next;
        }
    }

    /// All keys starting with `start`, in SCAN batches.
    pub(super) async fn scan_batches(&self, start: &str) -> redis::RedisResult<Vec<Vec<String>>> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}*", glob_escape(start));
        let mut cursor = 0u64;
        let mut batches = Vec::new();
        loop {
            let (next, keys) = scan_page(&mut conn, cursor, &pattern, 2000).await?;
            if !keys.is_empty() {
                batches.push(keys);
            }
            if next == 0 {
                return Ok(batches);
            }
            cursor = next;
        }
    }

    /// A write Redis must accept (`{prefix}writable`, expiring): fails
    /// while Redis answers but refuses writes (`OOM`, `READONLY`, `MISCONF`,
    /// `NOREPLICAS`).
    pub async fn probe_write(&self) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        redis::cmd("SET")
            .arg(format!("{}writable", self.prefix))
            .arg(revokd_jobs::now_unix())
            .arg("PX")
            .arg(10_000)
            .query_async::<()>(&mut conn)
            .await
    }

    /// Round trip to check Redis answers.
    pub async fn ping(&self) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
    }
}

/// The deny-list's key kinds a replica snapshot reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SnapshotKind {
    Token,
    Subject,
    Refresh,
    Family,
}

impl SnapshotKind {
    const ALL: [Self; 4] = [Self::Token, Self::Subject, Self::Refresh, Self::Family];

    /// The key name part after the prefix.
    fn tag(self) -> &'static str {
        match self {
            Self::Token => "jti:",
            Self::Subject => "sub:",
            Self::Refresh => "rt:",
            Self::Family => "rtf:",
        }
    }

    /// Whether the key's value matters (else only its TTL).
    fn has_value(self) -> bool {
        matches!(self, Self::Subject | Self::Refresh)
    }
}

impl Snapshot {
    fn add(&mut self, kind: SnapshotKind, id: String, value: Option<String>, until: i64) {
        match kind {
            SnapshotKind::Token => self.tokens.push((id, until)),
            SnapshotKind::Subject => {
                if let Some(nb) = value.and_then(|v| v.parse().ok()) {
                    self.subjects.push((id, nb, until));
                }
            }
            SnapshotKind::Refresh => {
                let entry = value
                    .and_then(|v| serde_json::from_str::<super::refresh::RefreshEntry>(&v).ok());
                if let Some(entry) = entry {
                    self.refresh
                        .push((id, entry.family, entry.state as u8, until));
                }
            }
            SnapshotKind::Family => self.families.push((id, until)),
        }
    }
}

/// Everything a replica holds, with the unix time each entry ends.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// `(token_id, until)`.
    pub tokens: Vec<(String, i64)>,
    /// `(subject, not_before, until)`.
    pub subjects: Vec<(String, i64, i64)>,
    /// `(token_id, family, state rank, until)` of registered refresh tokens.
    pub refresh: Vec<(String, String, u8, i64)>,
    /// `(family, until)` of revoked families.
    pub families: Vec<(String, i64)>,
}

/// One SCAN call: the next cursor and the keys matching `pattern`.
async fn scan_page(
    conn: &mut ConnectionManager,
    cursor: u64,
    pattern: &str,
    count: usize,
) -> redis::RedisResult<(u64, Vec<String>)> {
    redis::cmd("SCAN")
        .arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(count)
        .query_async(conn)
        .await
}

pub(super) fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Seconds a deny-list entry lives: until the token's expiry plus leeway,
/// capped at the maximum token lifetime. `None` for a token that checks
/// already call expired (past `exp` + leeway): it gets no Redis key.
pub fn deny_ttl(expires_at: i64, now: i64, leeway: i64, max_lifetime: i64) -> Option<i64> {
    let ttl = expires_at
        .saturating_add(leeway)
        .saturating_sub(now)
        .min(max_lifetime);
    (ttl > 0).then_some(ttl)
}

/// Seconds a watermark lives: once every token issued before it has expired.
pub fn watermark_ttl(leeway: i64, max_lifetime: i64) -> i64 {
    max_lifetime.saturating_add(leeway).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_runs_to_expiry_plus_leeway_capped_at_max_lifetime() {
        assert_eq!(deny_ttl(1_100, 1_000, 30, 3_600), Some(130));
        assert_eq!(deny_ttl(1_000_000, 1_000, 30, 3_600), Some(3_600));
        // Within leeway a check still accepts the token, so it must be denied.
        assert_eq!(deny_ttl(990, 1_000, 30, 3_600), Some(20));
        assert_eq!(deny_ttl(970, 1_000, 30, 3_600), None);
    }
}
