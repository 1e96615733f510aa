//! The Redis deny-list: `{prefix}jti:{token_id}` entries and
//! `{prefix}sub:{subject}` watermarks, written only through small Lua scripts
//! so that repeated or reordered jobs converge on the same state.

use std::sync::LazyLock;

use redis::{Script, aio::ConnectionManager};
use serde::{Deserialize, Serialize};

/// Sets an entry unless one with a longer remaining TTL is already there.
/// KEYS[1] entry key; ARGV[1] value; ARGV[2] TTL in seconds.
static REVOKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local ttl = redis.call('TTL', KEYS[1])
local want = tonumber(ARGV[2])
if ttl == -2 or (ttl >= 0 and ttl < want) then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', want)
  return 1
end
return 0",
    )
});

/// Raises a watermark, never lowers it. KEYS[1] watermark key; ARGV[1]
/// not_before; ARGV[2] TTL in seconds. Returns the watermark now in force.
static RAISE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cur = tonumber(redis.call('GET', KEYS[1]))
local nb = tonumber(ARGV[1])
if cur and cur >= nb then return cur end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return nb",
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
    /// The token_id is on the deny-list.
    pub denied: bool,
    /// The subject's revocation watermark, if any.
    pub not_before: Option<i64>,
}

/// Key layout and operations of the deny-list under one prefix.
#[derive(Clone)]
pub struct DenyList {
    conn: ConnectionManager,
    prefix: String,
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

    /// One round trip: is `token_id` denied, and what is `subject`'s watermark?
    pub async fn lookup(
        &self,
        token_id: &str,
        subject: Option<&str>,
    ) -> redis::RedisResult<Lookup> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("MGET");
        cmd.arg(self.jti_key(token_id));
        if let Some(sub) = subject {
            cmd.arg(self.sub_key(sub));
        }
        let values: Vec<Option<String>> = cmd.query_async(&mut conn).await?;
        Ok(Lookup {
            denied: values.first().is_some_and(Option::is_some),
            not_before: values
                .get(1)
                .and_then(|v| v.as_deref())
                .and_then(|v| v.parse().ok()),
        })
    }

    /// Puts `token_id` on the deny-list for `ttl_secs` (must be > 0), keeping
    /// a longer TTL already there.
    pub async fn deny(
        &self,
        token_id: &str,
        entry: &DenyEntry,
        ttl_secs: i64,
    ) -> redis::RedisResult<()> {
        let value = serde_json::to_string(entry).map_err(|e| {
            redis::RedisError::from((redis::ErrorKind::Client, "encode entry", e.to_string()))
        })?;
        let mut conn = self.conn.clone();
        let _: i64 = REVOKE
            .key(self.jti_key(token_id))
            .arg(value)
            .arg(ttl_secs)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Raises `subject`'s watermark to `not_before` (never lowers it);
    /// returns the watermark in force.
    pub async fn raise_watermark(
        &self,
        subject: &str,
        not_before: i64,
        ttl_secs: i64,
    ) -> redis::RedisResult<i64> {
        let mut conn = self.conn.clone();
        RAISE
            .key(self.sub_key(subject))
            .arg(not_before)
            .arg(ttl_secs)
            .invoke_async(&mut conn)
            .await
    }

    /// Publishes an empty message on `channel`; failures are only logged
    /// (a waiter that misses it times out, nothing is lost).
    pub async fn publish(&self, channel: &str) {
        let mut conn = self.conn.clone();
        let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
            .arg(channel)
            .arg(1)
            .query_async(&mut conn)
            .await;
        if let Err(error) = sent {
            tracing::debug!(%error, "publish failed");
        }
    }

    /// Counts keys under `{prefix}{kind}` (`jti:` or `sub:`) with SCAN.
    pub async fn count(&self, kind: &str) -> redis::RedisResult<u64> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}{kind}*", glob_escape(&self.prefix));
        let mut cursor = 0u64;
        let mut total = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            total += keys.len() as u64;
            if next == 0 {
                return Ok(total);
            }
            cursor = next;
        }
    }

    /// Depth of the apalis-redis queue, read from its keys directly.
    pub async fn queue_depth(
        &self,
        queue: &apalis_redis::Config,
    ) -> redis::RedisResult<QueueDepth> {
        let mut conn = self.conn.clone();
        let (active, scheduled, failed, done, workers): (u64, u64, u64, u64, Vec<String>) =
            redis::pipe()
                .llen(queue.active_jobs_list())
                .zcard(queue.scheduled_jobs_set())
                .scard(queue.dead_jobs_set())
                .scard(queue.done_jobs_set())
                .zrange(queue.workers_set(), 0, -1)
                .query_async(&mut conn)
                .await?;
        let mut running = 0;
        if !workers.is_empty() {
            let mut pipe = redis::pipe();
            for worker in &workers {
                pipe.scard(format!("{}:{worker}", queue.inflight_jobs_set()));
            }
            let counts: Vec<u64> = pipe.query_async(&mut conn).await?;
            running = counts.iter().sum();
        }
        Ok(QueueDepth {
            pending: active + scheduled,
            running,
            failed,
            done,
        })
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

/// Jobs in the queue by state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueDepth {
    /// Waiting to run (queued or scheduled for a retry).
    pub pending: u64,
    /// Claimed by a worker.
    pub running: u64,
    /// Set aside for good (dead set).
    pub failed: u64,
    /// Finished, not yet vacuumed.
    pub done: u64,
}

fn glob_escape(s: &str) -> String {
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
